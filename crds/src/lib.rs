//! Custom resource types of novads (API group `novads.io`, version `v1alpha1`).

/// The API group of every novads custom resource.
pub const GROUP: &str = "novads.io";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
