//! The security monitor in the operator: while this replica leads, it evaluates the
//! minimum-security policies (`novads-monitor`) over the cluster facts of its own watch caches
//! ([`caches`]) and, when `novads operator --config` names the federation, the federation
//! facts; once when the caches have listed, again after every change (debounced) and on a
//! schedule. Each evaluation writes, with server-side apply under field manager
//! [`FIELD_MANAGER`] ([`outputs`] decides what):
//!
//! - an OpenReports `Report` in each municipality namespace and a `ClusterReport` for the
//!   platform checks;
//! - each Municipality's `status.compliance`;
//! - a Warning Event on each SecurityExemption that stopped applying (once per leader term);
//!
//! and the metrics of [`novads_monitor::metrics`].

pub mod caches;
pub mod outputs;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{EventType, Reporter};
use kube::{Client, Resource, ResourceExt};
use novads_crds::{ComplianceSummary, Municipality, SecurityExemption};
use novads_monitor::facts::AdminGroups;
use novads_monitor::metrics::MonitorMetrics;
use novads_monitor::report::Report;
use novads_monitor::{FactsDocument, Lang, PolicySet, Source, SourceState};
use serde_json::json;
use tokio::sync::Notify;

use self::caches::Caches;
use self::outputs::{LapsedExemption, Outputs};
use crate::compliance::{ClusterObjects, cluster_facts, exemption};
use crate::reconcile::EventRecorder;
use crate::watch::Stop;

/// Field manager of everything the monitor writes (Reports, `status.compliance`), and its
/// Events' reporting controller.
pub const FIELD_MANAGER: &str = novads_monitor::report::SOURCE;

/// Why federation checks are skipped when the operator runs without `--config`.
pub const NO_FEDERATION: &str =
    "federation facts not collected (novads operator runs without --config)";

/// Collects the federation facts (configuration, database, directories) at a time. The
/// operator cannot reach them itself; `novads operator --config` supplies a collector.
pub trait CollectFederation: Send + Sync {
    /// The facts; a failure is a document whose federation source failed, never an error.
    /// `admin_groups` names each municipality's realm and admin groups, whose members the
    /// collector counts in the realm's directory.
    fn collect(
        &self,
        now: DateTime<Utc>,
        admin_groups: Vec<AdminGroups>,
    ) -> BoxFuture<'_, FactsDocument>;
}

/// A shared federation collector.
#[derive(Clone)]
pub struct FederationCollector(pub Arc<dyn CollectFederation>);

impl fmt::Debug for FederationCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FederationCollector")
    }
}

/// How the monitor runs.
#[derive(Clone, Debug)]
pub struct MonitorOptions {
    /// The checks (by default those of `policies/`, built in).
    pub policies: Arc<PolicySet>,
    /// Time between scheduled evaluations; also how old `status.compliance` may grow before
    /// it is rewritten with unchanged counts.
    pub interval: Duration,
    /// How long after a change the evaluation waits, so that a burst of changes is
    /// evaluated once.
    pub debounce: Duration,
    /// Where the federation facts come from; none: federation checks are skipped.
    pub federation: Option<FederationCollector>,
    /// Language of the Reports' titles and messages (`--monitor-language`, Latvian unless
    /// told otherwise: the municipalities' security officers read them).
    pub language: Lang,
}

/// The default schedule: every five minutes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// The default debounce after a change.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_secs(10);

impl Default for MonitorOptions {
    fn default() -> Self {
        Self {
            policies: Arc::new(novads_monitor::shipped::policies()),
            interval: DEFAULT_INTERVAL,
            debounce: DEFAULT_DEBOUNCE,
            federation: None,
            language: Lang::Lv,
        }
    }
}

/// Why an evaluation's outputs were not all written.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cannot apply {what}: {source}")]
    Apply {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the evaluation stopped unexpectedly: {0}")]
    Evaluation(String),
}

/// One term's monitor: what it writes with, and what it has already announced.
pub struct Monitor {
    client: Client,
    options: MonitorOptions,
    recorder: EventRecorder,
    metrics: MonitorMetrics,
    announced: BTreeSet<(String, String, DateTime<Utc>)>,
    /// Report kinds the cluster does not serve (the OpenReports CRDs are not installed), so
    /// that it is said once, not at every evaluation.
    reports_missing: bool,
}

impl Monitor {
    pub fn new(
        client: Client,
        options: MonitorOptions,
        identity: Option<String>,
        metrics: MonitorMetrics,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: identity,
        };
        Self {
            recorder: EventRecorder::new(&client, &reporter),
            client,
            options,
            metrics,
            announced: BTreeSet::new(),
            reports_missing: false,
        }
    }

    /// Evaluates `objects` (and the federation, when configured) at `now` and writes every
    /// output. The metrics record the evaluation whatever happens to the writes; the time of
    /// the last success only when every write succeeded.
    pub async fn evaluate(
        &mut self,
        objects: ClusterObjects,
        now: DateTime<Utc>,
    ) -> Result<Outputs, MonitorError> {
        let started = Instant::now();
        let result = self.evaluate_and_write(objects, now).await;
        self.metrics.observe_duration(started.elapsed());
        if result.is_ok() {
            self.metrics.mark_success(now);
        }
        result
    }

    async fn evaluate_and_write(
        &mut self,
        objects: ClusterObjects,
        now: DateTime<Utc>,
    ) -> Result<Outputs, MonitorError> {
        let mut facts = cluster_facts(&objects, now);
        // A SecurityExemption the API server let through with an unreadable expiry applies to
        // nothing (fail closed) and is said in the log.
        let exemptions: Vec<_> = objects
            .exemptions
            .iter()
            .filter_map(|object| {
                exemption(object)
                    .map_err(|problem| tracing::warn!(%problem, "exemption ignored"))
                    .ok()
            })
            .collect();
        match &self.options.federation {
            Some(collector) => {
                let admin_groups = crate::compliance::admin_groups(&objects);
                facts.merge(collector.0.collect(now, admin_groups).await);
            }
            None => {
                facts.sources.insert(
                    Source::Federation,
                    SourceState::NotCollected(NO_FEDERATION.into()),
                );
            }
        }
        let current: BTreeMap<String, Option<ComplianceSummary>> = objects
            .municipalities
            .iter()
            .map(|m| {
                let compliance = m.status.as_ref().and_then(|s| s.compliance.clone());
                (m.name_any(), compliance)
            })
            .collect();
        let policies = self.options.policies.clone();
        let refresh = self.options.interval;
        let announced = self.announced.clone();
        let language = self.options.language;
        // Evaluating thousands of subjects takes a while: off the async threads.
        let (evaluation, outputs) = tokio::task::spawn_blocking(move || {
            let evaluation = novads_monitor::evaluate(&policies, &facts, &exemptions, now);
            let outputs = outputs::plan(&evaluation, &current, &announced, refresh, language);
            (evaluation, outputs)
        })
        .await
        .map_err(|e| MonitorError::Evaluation(e.to_string()))?;
        self.metrics.record(&evaluation);
        tracing::info!(
            results = evaluation.results.len(),
            reports = outputs.reports.len(),
            statuses = outputs.statuses.len(),
            "security monitor evaluated"
        );
        self.write(&outputs, &objects).await?;
        Ok(outputs)
    }

    /// Writes every output; the first failure is returned after the others were tried.
    async fn write(
        &mut self,
        outputs: &Outputs,
        objects: &ClusterObjects,
    ) -> Result<(), MonitorError> {
        let mut first_error = None;
        for report in &outputs.reports {
            if let Err(error) = self.apply_report(report).await {
                tracing::warn!(%error, "security monitor output not written");
                first_error.get_or_insert(error);
            }
        }
        let municipalities: Api<Municipality> = Api::all(self.client.clone());
        for (name, compliance) in &outputs.statuses {
            let patch = json!({
                "apiVersion": Municipality::api_version(&()),
                "kind": Municipality::kind(&()),
                "status": { "compliance": compliance },
            });
            if let Err(source) = municipalities
                .patch_status(name, &apply_params(), &Patch::Apply(&patch))
                .await
            {
                let error = MonitorError::Apply {
                    what: format!("Municipality {name} status.compliance"),
                    source,
                };
                tracing::warn!(%error, "security monitor output not written");
                first_error.get_or_insert(error);
            }
        }
        for lapsed in &outputs.lapsed {
            self.announce(lapsed, &objects.exemptions).await;
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn apply_report(&mut self, report: &Report) -> Result<(), MonitorError> {
        let (kind, plural) = match report.kind.as_str() {
            "ClusterReport" => ("ClusterReport", "clusterreports"),
            _ => ("Report", "reports"),
        };
        let resource = ApiResource {
            group: "openreports.io".into(),
            version: "v1alpha1".into(),
            api_version: novads_monitor::report::API_VERSION.into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = match &report.metadata.namespace {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        match api
            .patch(
                &report.metadata.name,
                &apply_params(),
                &Patch::Apply(report),
            )
            .await
        {
            Ok(_) => {
                self.reports_missing = false;
                Ok(())
            }
            // Without the OpenReports CRDs there is nowhere to write: said once, and the
            // status and metrics still carry the results.
            Err(kube::Error::Api(status))
                if status.code == 404 && !report_namespace_missing(&status) =>
            {
                if !self.reports_missing {
                    tracing::error!(
                        "the cluster does not serve openreports.io/v1alpha1 {plural}: install \
                         the OpenReports CRDs to get compliance reports"
                    );
                }
                self.reports_missing = true;
                Ok(())
            }
            Err(source) => Err(MonitorError::Apply {
                what: format!(
                    "{kind} {}{}",
                    report
                        .metadata
                        .namespace
                        .as_deref()
                        .map(|n| format!("{n}/"))
                        .unwrap_or_default(),
                    report.metadata.name
                ),
                source,
            }),
        }
    }

    /// A Warning Event on the exemption that stopped applying; remembered so that it is
    /// published once per term.
    async fn announce(&mut self, lapsed: &LapsedExemption, exemptions: &[SecurityExemption]) {
        let Some(object) = exemptions.iter().find(|e| {
            e.name_any() == lapsed.name && e.namespace().as_deref() == Some(&lapsed.namespace)
        }) else {
            return;
        };
        crate::reconcile::publish(
            &self.recorder,
            &object.object_ref(&()),
            EventType::Warning,
            lapsed.reason(),
            "Evaluate",
            lapsed.note(),
        )
        .await;
        self.announced.insert((
            lapsed.namespace.clone(),
            lapsed.name.clone(),
            lapsed.expires,
        ));
    }
}

/// A 404 about a namespace (being deleted) rather than about the Report kind.
fn report_namespace_missing(status: &kube::core::Status) -> bool {
    status
        .details
        .as_ref()
        .is_some_and(|d| d.kind == "namespaces")
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Runs the monitor for one term as leader, until `stop`: watches, then evaluates once the
/// caches have listed, after each change (waiting `debounce` first) and every `interval`.
pub async fn run(
    client: Client,
    options: MonitorOptions,
    identity: Option<String>,
    metrics: MonitorMetrics,
    stop: Stop,
) {
    let changed = Arc::new(Notify::new());
    // Without KubeVirt there are no snapshots to watch (a new term looks again).
    let kubevirt = crate::virtual_server::watch::probe_kubevirt(&client).await;
    let (caches, drivers) = Caches::watch(&client, &changed, kubevirt.is_ok());
    let watches = futures::future::join_all(drivers);
    let (interval, debounce) = (options.interval, options.debounce);
    let mut monitor = Monitor::new(client, options, identity, metrics);
    let evaluations = async {
        if caches.wait_until_ready().await.is_err() {
            return;
        }
        let mut schedule = EvaluationSchedule::new(interval, debounce, &changed);
        loop {
            schedule.due().await;
            if let Err(error) = monitor.evaluate(caches.objects(), Utc::now()).await {
                tracing::warn!(%error, "security monitor evaluation incomplete");
            }
        }
    };
    tokio::select! {
        () = stop => tracing::info!("security monitor stopped"),
        _ = watches => tracing::warn!("security monitor watches ended"),
        () = evaluations => {}
    }
}

/// When the monitor evaluates: at once, then `debounce` after a change is signalled on
/// `changed` (the changes signalled meanwhile are taken in by the same evaluation), and
/// whenever `interval` passes without an evaluation.
pub struct EvaluationSchedule<'a> {
    schedule: tokio::time::Interval,
    debounce: Duration,
    changed: &'a Notify,
    first: bool,
}

impl<'a> EvaluationSchedule<'a> {
    pub fn new(interval: Duration, debounce: Duration, changed: &'a Notify) -> Self {
        let mut schedule = tokio::time::interval(interval);
        schedule.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            schedule,
            debounce,
            changed,
            first: true,
        }
    }

    /// Waits until the next evaluation is due. Called again once that evaluation is done.
    pub async fn due(&mut self) {
        if !std::mem::take(&mut self.first) {
            // The schedule counts from the last evaluation, so one that a change brought on
            // just before the tick is not followed by a second at once.
            self.schedule.reset();
        }
        tokio::select! {
            _ = self.schedule.tick() => {}
            () = self.changed.notified() => tokio::time::sleep(self.debounce).await,
        }
        // Changes signalled until now are taken in by this evaluation.
        let _ = self.changed.notified().now_or_never();
    }
}
