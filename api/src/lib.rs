//! `novads serve`: the admin API, federated sign-on and metrics of the novads platform.
//!
//! The crate is a thin I/O shell ([`server`], [`db`]) around parts that decide without I/O
//! ([`config`] validation, [`error`] rendering).

pub mod commands;
pub mod config;
pub mod db;
pub mod dev;
pub mod error;
pub mod federation;
pub mod lifetimes;
pub mod metrics;
pub mod oidc;
pub mod server;
pub mod state;
pub mod telemetry;
