//! `oidc-load`: a compiled, discovery-driven load driver for OpenID Connect providers.
//!
//! Each simulated browser runs the authorization code flow the way a person's browser does on
//! a first visit — no single sign-on cookie: it reads the provider's discovery document, opens
//! the authorization endpoint (with `state`, `nonce` and PKCE S256), follows redirects to the
//! login page, finds the form that holds the password field, submits it with every hidden
//! input it carries, follows redirects until one goes to the client's redirect URI (not
//! fetched), checks `state` (and `iss`), and exchanges the code at the token endpoint. Refresh
//! mode signs each browser in once and then measures refresh-token grants, always presenting
//! the newest token.
//!
//! Nothing in the driver is specific to novads: the client, redirect URI, scope and the login
//! form's field names are options, so the same driver measures other providers side by side.
//!
//! ```no_run
//! # async fn example() -> Result<(), novads_oidc_load::LoadError> {
//! use novads_oidc_load::{Credentials, LoadConfig, Mode, run};
//! let redirect = url::Url::parse("http://127.0.0.1/cb").expect("url");
//! let mut config = LoadConfig::new(
//!     "http://127.0.0.1:8080",
//!     "bench-public",
//!     redirect,
//!     vec![Credentials::new("jana@talsi", "Jana-Talsi-2024!")],
//! );
//! config.mode = Mode::Refresh;
//! let report = run(&config).await?;
//! println!("{}", report.to_text());
//! # Ok(()) }
//! ```

pub mod cli;
pub mod discovery;
mod error;
pub mod flow;
pub mod form;
pub mod outcome;
pub mod pkce;
pub mod redirect;
mod run;
pub mod stats;
pub mod tokens;
pub mod users;

pub use error::LoadError;
pub use outcome::{Category, FlowError, Step};
pub use run::{ClientAuthChoice, Limit, LoadConfig, Mode, PkceChoice, http_client, run, target};
pub use stats::{Latency, Report};
pub use users::Credentials;
