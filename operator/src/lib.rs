//! Kubernetes controllers of novads: municipal tenancies and their virtual servers.
//!
//! Pure "desired state" functions decide; thin kube I/O carries the decisions out. Each
//! resource has one folder with the same rooms: [`municipality`] (`build`, `controller`,
//! `watch`) and [`virtual_server`] (`admission`, `build`, `schedule`, `status` — all pure —
//! and `controller`, `watch`). What both controllers share: [`reconcile`] (field manager,
//! labels, applies, deletes, status writes, back-off, Events, conditions) and [`watch`]
//! (watch streams, metrics around reconciles). [`runtime::run`] is what `novads operator`
//! runs: the [`health`] and metrics endpoints, leader election ([`leader`]), and both
//! controllers while this replica leads. [`render`] prints what the controllers would apply;
//! [`kubevirt`] holds KubeVirt's types, [`quantity`] Kubernetes quantities as numbers.
//! [`compliance`] collects the security monitor's cluster facts from the same objects, and
//! [`monitor`] evaluates them continuously while this replica leads. [`exposure`] computes
//! who reaches which port of a server from its namespace's NetworkPolicies and Services.

pub mod compliance;
pub mod exposure;
pub mod health;
pub mod kubevirt;
pub mod leader;
pub mod monitor;
pub mod municipality;
pub mod quantity;
pub mod reconcile;
pub mod render;
pub mod runtime;
pub mod virtual_server;
pub mod watch;

pub use municipality::build::TenancySettings;
pub use reconcile::FIELD_MANAGER;
pub use render::{RenderError, render, render_with};
pub use runtime::{
    ClusterTarget, OperatorError, OperatorOptions, client_from_kubeconfig, run, run_with_client,
};
