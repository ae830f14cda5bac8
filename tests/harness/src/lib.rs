//! Test kit for novads: throwaway real servers and the fixture directories.
//!
//! - [`Slapd`]: an OpenLDAP `slapd` with its own temp dir, config, mdb
//!   database and loopback ports, loaded with a [`Municipality`]'s fixture
//!   (memberof and ppolicy overlays, optional TLS with a generated CA).
//! - [`Postgres`]: a PostgreSQL cluster on a free loopback port, with
//!   [`Postgres::create_database`] for per-test databases.
//! - [`fixtures`]: the municipalities, users, groups and passwords.
//! - [`serve`]: what starting the real `novads serve` needs (a free port, the realm of a
//!   [`Slapd`] as configuration, waiting for readiness).
//!
//! Servers stop and their directories disappear when the values are dropped
//! (also on panic). When a server is not installed, `start` prints
//! `skipped: ...` and returns `None`, unless `NOVADS_REQUIRE_SERVICES=1`, in
//! which case it panics; a server that is installed but fails to start always
//! panics with its log.
//!
//! ```no_run
//! use novads_testkit::fixtures::talsi;
//! use novads_testkit::{Municipality, Postgres, Slapd};
//!
//! # async fn example() {
//! let Some(ldap) = Slapd::start(Municipality::Talsi).await else { return };
//! let Some(pg) = Postgres::start().await else { return };
//! let db = pg.create_database("federation").await;
//! // configure the realm with ldap.url(), ldap.service_dn(), ...
//! // and log in as talsi::JANA.login() with talsi::JANA.password
//! # let _ = (db, talsi::JANA);
//! # }
//! ```

mod error;
pub mod fixtures;
mod postgres;
mod process;
pub mod serve;
mod skip;
mod slapd;
mod tls;

pub use error::CommandError;
pub use fixtures::{Group, Municipality, User};
pub use postgres::{DatabaseRoles, PG_BINDIR_ENV, Postgres};
pub use process::SCRATCH_DIR_ENV;
pub use skip::{REQUIRE_SERVICES_ENV, services_required};
pub use slapd::{SLAPD_DEBUG_ENV, Slapd, SlapdOptions};
pub use tls::client_config as rustls_client_config;
