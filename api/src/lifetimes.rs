//! How long things live: tokens, codes, sessions, sign-in requests, signing keys, and how long
//! a request may take. One place, because several of them are derived from the others (a
//! revocation must outlive every token it names).
//!
//! The database stores times as milliseconds since the epoch; [`millis`] converts.

use std::time::Duration;

/// A request still running after this long is answered with 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Readiness must answer quickly even when the database hangs.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Lifetime of access and ID tokens.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Longest lifetime of a JWT this provider signs: access and ID tokens live at most an hour
/// (refresh tokens are opaque, not JWTs). Retired signing keys stay published this long.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// Clock skew tolerated on `exp` and `nbf` when verifying.
pub const VERIFY_LEEWAY: Duration = Duration::from_secs(30);
/// How old an `id_token_hint` may be at logout: it only identifies the client.
pub const LOGOUT_HINT_LEEWAY: Duration = Duration::from_secs(24 * 60 * 60);

/// How long the login page may stay open (and its CSRF cookie live).
pub const AUTHORIZATION_REQUEST_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// How long a code may wait for its exchange (OAuth recommends at most 10 minutes).
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// How long a sign-in can be kept alive by refreshing, counted from the password sign-in.
pub const REFRESH_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// A single sign-on session ends this long after its last use ...
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// ... and at the latest this long after the password sign-in.
pub const SESSION_ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);

/// How long a grant's revocation is remembered. Every access token of the grant was issued by
/// a request that started before the revocation (later ones are refused by
/// `FlowStore::grant_usable`), so it was signed at most a request timeout after it, lives a
/// token lifetime, and is accepted for the verification leeway beyond its `exp`.
pub const GRANT_REVOCATION: Duration = Duration::from_secs(
    TOKEN_LIFETIME.as_secs() + REQUEST_TIMEOUT.as_secs() + VERIFY_LEEWAY.as_secs(),
);

/// How often every replica reloads the signing keys. The default retirement grace is ten
/// times this, so a replica that missed a few reloads still signs with a published key.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// A duration in milliseconds, as the database stores times. Every duration here is far
/// below `i64::MAX` milliseconds.
pub const fn millis(duration: Duration) -> i64 {
    duration.as_millis() as i64
}

/// A duration in whole seconds, as JWT claims count time.
pub const fn seconds(duration: Duration) -> i64 {
    duration.as_secs() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_revocation_outlives_every_token_of_the_grant() {
        assert!(GRANT_REVOCATION > TOKEN_LIFETIME + REQUEST_TIMEOUT);
        assert_eq!(millis(CODE_LIFETIME), 60_000);
        assert_eq!(seconds(TOKEN_LIFETIME), 600);
    }
}
