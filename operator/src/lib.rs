//! Kubernetes controllers of novads: municipal tenancies and virtual servers.

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "novads-operator";
