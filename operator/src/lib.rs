//! Kubernetes controllers of novads: municipal tenancies (and, later, virtual servers).
//!
//! Pure "desired state" functions ([`tenancy`]) decide; [`municipality`] is the thin kube I/O
//! around them; [`render`] prints what the controller would apply. [`runtime::run`] is what
//! `novads operator` runs: leader election ([`leader`]), health and metrics endpoints, and the
//! controllers while this replica leads.

pub mod leader;
pub mod municipality;
pub mod quantity;
pub mod render;
pub mod runtime;
pub mod tenancy;

pub use render::{RenderError, render, render_with};
pub use runtime::{OperatorError, OperatorOptions, run, run_with_client};
pub use tenancy::{FIELD_MANAGER, TenancySettings};
