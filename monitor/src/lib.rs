//! The security monitor of novads: the minimum cybersecurity requirements as data (policies),
//! evaluated over typed facts about the platform, its municipalities, their realms and their
//! virtual servers.
//!
//! Pure: no I/O beyond reading the policy files it is given. Collectors that read the cluster
//! (`novads-operator`) or the federation (`novads-api`) build a [`FactsDocument`]; [`evaluate`]
//! decides; [`report`] and [`output`] present the results.
//!
//! - [`facts`]: the facts schema per subject kind, sources and their states;
//! - [`policy`]: the check model and the policy-directory loader;
//! - [`expr`]: CEL compilation, type checking against the facts schema, bounds;
//! - [`exemption`]: accepted risks with reason, approver and expiry;
//! - [`evaluate`](mod@evaluate): results and the compliance summary;
//! - [`report`]: OpenReports `Report` / `ClusterReport` objects;
//! - [`output`]: the table shown by `novads policies eval`;
//! - [`html`]: the printable HTML report;
//! - [`metrics`]: the Prometheus metrics of an evaluation;
//! - [`shipped`]: the checks of `policies/`, built in.

pub mod evaluate;
pub mod exemption;
pub mod expr;
pub mod facts;
pub mod html;
pub mod metrics;
pub mod output;
pub mod policy;
pub mod report;
pub mod shipped;

pub use evaluate::{CheckResult, Evaluation, Outcome, Tally, evaluate};
pub use exemption::{Exemption, ExemptionState};
pub use facts::{FactsDocument, Source, SourceState, Subject, SubjectKind};
pub use policy::{Lang, PolicySet, Problem, Severity};
