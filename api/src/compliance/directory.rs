//! `departed_with_access`: who still holds live access (an open single sign-on session or an
//! unspent refresh token) but is gone or disabled in their directory. The holders come from
//! the database; each is looked up in their realm's directory the way a token refresh checks
//! them again.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::db::{Database, on_pool};
use crate::federation::directory::DirectoryFailure;
use crate::federation::username::parse_login_name;
use crate::federation::{Federation, Identity};

/// Per realm, the users (normalised, without the realm) holding live access at `now`.
pub async fn live_holders(
    db: &Database,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, BTreeSet<String>>, sqlx::Error> {
    let now_ms = now.timestamp_millis();
    let identities: Vec<String> = on_pool!(db, |pool| {
        sqlx::query_scalar(
            "SELECT identity FROM oidc_sessions WHERE ended_at IS NULL AND expires_at > $1 \
             UNION SELECT identity FROM oidc_refresh_tokens \
             WHERE revoked_at IS NULL AND used_at IS NULL AND expires_at > $1",
        )
        .bind(now_ms)
        .fetch_all(pool)
        .await
    })?;
    let mut holders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for json in identities {
        // A row that does not parse names nobody the directory could answer for; the sign-in
        // paths refuse such rows as well.
        let Ok(identity) = serde_json::from_str::<Identity>(&json) else {
            continue;
        };
        if let Ok(name) = parse_login_name(&identity.username, None) {
            holders.entry(identity.realm).or_default().insert(name.user);
        }
    }
    Ok(holders)
}

/// How many of a realm's `users` their directory no longer knows or has disabled. An
/// unavailable directory is an error with its reason: the count would be a guess.
pub async fn departed(
    federation: &Federation,
    realm: &str,
    users: &BTreeSet<String>,
) -> Result<i64, String> {
    let Some(realm_directory) = federation.realm(realm) else {
        // The realm was removed from the configuration: nobody can vouch for its users.
        return Ok(i64::try_from(users.len()).unwrap_or(i64::MAX));
    };
    let mut departed = 0;
    for user in users {
        match realm_directory.directory.lookup(user).await.result {
            Ok(_) | Err(DirectoryFailure::LockedOut) | Err(DirectoryFailure::BadCredentials) => {}
            Err(
                DirectoryFailure::UnknownUser
                | DirectoryFailure::AmbiguousUser
                | DirectoryFailure::AccountDisabled(_),
            ) => departed += 1,
            Err(DirectoryFailure::Unavailable(reason)) => {
                return Err(format!("directory of realm {realm}: {reason}"));
            }
        }
    }
    Ok(departed)
}
