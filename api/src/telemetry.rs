//! Logging: human-readable on a terminal, one JSON object per line everywhere else (so log
//! collectors in a cluster parse it without configuration).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Environment variable with a `tracing` filter, e.g. `novads=debug,tower_http=info`.
pub const ENV_LOG: &str = "NOVADS_LOG";

/// Installs the global subscriber. Logs go to stderr; stdout is kept for command output.
pub fn init() {
    let filter = EnvFilter::try_from_env(ENV_LOG)
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (tests, embedding) keeps the first subscriber; that is not an error.
    let _ = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    };
}
