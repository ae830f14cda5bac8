//! `novads serve`: the admin API, federated sign-on and metrics of the novads platform.
//!
//! The crate is a thin I/O shell ([`server`], [`db`]) around parts that decide without I/O
//! ([`config`] validation, [`error`] rendering). Read it bottom-up by layer; a module only
//! uses modules of its own layer or below:
//!
//! 1. [`config`] (with [`oidc::algorithm`]) and [`lifetimes`]: values, depending on nothing.
//! 2. [`db`]: the pools, migrations and the seam that runs one SQL text on either backend.
//! 3. [`federation`] (directories, trusts, lockout, audit trail) and the provider's stores
//!    and crypto: [`oidc::keys`], [`oidc::store`], [`oidc::request`],
//!    [`oidc::sealed_request`], [`oidc::jwt`].
//! 4. [`state`]: what every handler reaches, built once.
//! 5. [`compliance`]: federation facts for the security monitor, read from the configuration
//!    and the database.
//! 6. The HTTP faces: [`oidc::endpoints`] with [`oidc::bearer`] and [`oidc::error`], the
//!    admin API in [`admin`] (on the same bearer check), then [`server`] (routes, middleware,
//!    background tasks) with [`connections`] (accepting connections under limits) and
//!    [`proxy`] (the client's address behind trusted reverse proxies), [`commands`] (the CLI's
//!    work) and
//!    [`dev`] (`novads dev` and its demo application, on top of the provider).

pub mod admin;
pub mod commands;
pub mod compliance;
pub mod config;
pub mod connections;
pub mod db;
pub mod dev;
pub mod error;
pub mod federation;
pub mod lifetimes;
pub mod metrics;
pub mod oidc;
pub mod proxy;
pub mod server;
pub mod state;
pub mod telemetry;
