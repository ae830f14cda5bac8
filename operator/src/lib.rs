//! Kubernetes controllers of novads: municipal tenancies and their virtual servers.
//!
//! Pure "desired state" functions decide; thin kube I/O carries the decisions out:
//! [`tenancy`] and [`municipality`] for Municipalities; [`virtual_server`] (admission,
//! builders, schedules, status — all pure — and its
//! [`controller`](virtual_server::controller)) for VirtualServers on KubeVirt ([`kubevirt`]
//! types). [`render`] prints what the tenancy controller would apply. [`runtime::run`] is what
//! `novads operator` runs: leader election ([`leader`]), health and metrics endpoints, and
//! both controllers while this replica leads.

pub mod compliance;
pub mod kubevirt;
pub mod leader;
pub mod municipality;
pub mod quantity;
pub mod reconcile;
pub mod render;
pub mod runtime;
pub mod tenancy;
pub mod virtual_server;

pub use render::{RenderError, render, render_with};
pub use runtime::{OperatorError, OperatorOptions, run, run_with_client};
pub use tenancy::{FIELD_MANAGER, TenancySettings};
