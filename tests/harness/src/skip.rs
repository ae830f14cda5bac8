//! Skipping tests when a server is not installed.

/// Environment variable that turns "not installed, skipped" into a panic.
pub const REQUIRE_SERVICES_ENV: &str = "NOVADS_REQUIRE_SERVICES";

/// Whether `NOVADS_REQUIRE_SERVICES` is set to `1` (or `true`/`yes`): then a
/// missing server binary fails the test instead of skipping it (use in CI).
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES_ENV)
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// Reports a missing prerequisite: panics when services are required,
/// otherwise prints `skipped: <reason> (install: <hint>)` and returns `None`.
pub(crate) fn unavailable<T>(reason: &str, install_hint: &str) -> Option<T> {
    if services_required() {
        panic!("{reason}, and {REQUIRE_SERVICES_ENV}=1 requires it (install: {install_hint})");
    }
    eprintln!("skipped: {reason} (install: {install_hint})");
    None
}
