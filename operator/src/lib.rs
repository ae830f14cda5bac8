//! Kubernetes controllers of novads: municipal tenancies (and, later, virtual servers).
//!
//! Pure "desired state" functions ([`tenancy`]) decide; [`municipality`] is the thin kube I/O
//! around them; [`render`] prints what the controller would apply.

pub mod municipality;
pub mod quantity;
pub mod render;
pub mod tenancy;

pub use render::{RenderError, render, render_with};
pub use tenancy::{FIELD_MANAGER, TenancySettings};
