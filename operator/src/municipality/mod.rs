//! Municipalities: a `Municipality` becomes its tenancy — a namespace with quota, limits,
//! network policies and role bindings.
//!
//! [`build`] decides the objects (pure), [`controller`] reconciles one Municipality (finalizer,
//! apply, status, deletion), [`watch`] runs the controller on its watches.

pub mod build;
pub mod controller;
pub mod watch;
