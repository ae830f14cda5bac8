//! Federation facts for the security monitor (see docs/monitor.md): what the configuration
//! and the database say about the platform and each realm.
//!
//! [`realm`] decides the facts a realm's configuration settles; this module is the I/O shell
//! that opens the database for reading, reads the audit trail, its statistics and the signing
//! keys, asks the directories about holders of live access ([`directory`]), lists each
//! realm's accounts and joins them with the audit trail's sign-ins and the municipalities'
//! admin groups ([`accounts`]), and assembles a [`FactsDocument`] with the federation source's
//! state. Each LDAP realm's password policies are read from its directory ([`realm`] decides
//! their facts); a directory that does not show them leaves those facts uncollected with the
//! reason, so the checks reading them give `error`, never `pass`. [`own`] evaluates the federation checks of a running server on
//! a schedule, for `novads dev`'s metrics.

pub mod accounts;
pub mod directory;
pub mod own;
pub mod realm;

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use novads_monitor::facts::{AdminGroups, MunicipalityFacts, PlatformFacts, RealmFacts};
use novads_monitor::{FactsDocument, Source, SourceState, Subject};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use crate::config::{Config, redact_url};
use crate::db::{Backend, Database, DbError, on_pool};
use crate::federation::audit::{self, AuditEventKind, format_time};
use crate::federation::setup;

/// The name of the one Platform subject, as the cluster collector names it.
pub const PLATFORM_SUBJECT: &str = "novads";

/// Why collecting failed; the text becomes the reason of every federation `error` result.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("database {url}: {source}")]
    Query { url: String, source: sqlx::Error },
    #[error("database {url} holds no novads schema")]
    NoSchema { url: String },
}

/// Opens the configured database for reading: no migration, and a SQLite file that does not
/// exist is an error rather than a new empty database.
pub async fn open_read_only(config: &Config) -> Result<Database, CollectError> {
    let url = &config.database;
    let shown = redact_url(url);
    let db = match Backend::of_url(url) {
        Some(Backend::Sqlite) => {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|source| DbError::InvalidUrl {
                    url: shown.clone(),
                    source,
                })?
                .create_if_missing(false)
                .read_only(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(2)
                .connect_with(options)
                .await
                .map_err(|source| DbError::Unreachable {
                    url: shown.clone(),
                    source,
                })?;
            Database::Sqlite(pool)
        }
        _ => {
            let password = match &config.database_password_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                        .map_err(|source| DbError::PasswordFile {
                            path: path.display().to_string(),
                            source,
                        })?,
                ),
                None => None,
            };
            Database::connect(url, password.as_deref()).await?
        }
    };
    match db.schema_version().await? {
        Some(_) => Ok(db),
        None => Err(CollectError::NoSchema { url: shown }),
    }
}

/// Opens the database and collects; a failure becomes a document whose federation source
/// failed with the reason, so every federation check is an `error`. `admin_groups` (from the
/// Municipality objects) says whose administrators to count.
pub async fn collect_configured(
    config: &Config,
    now: DateTime<Utc>,
    admin_groups: &[AdminGroups],
) -> FactsDocument {
    let collected = match open_read_only(config).await {
        Ok(db) => {
            let facts = collect(config, &db, now, admin_groups).await;
            db.close().await;
            facts
        }
        Err(error) => Err(error),
    };
    collected.unwrap_or_else(|error| failed(config, error.to_string()))
}

/// A document that says federation facts could not be collected, and why. It still names the
/// platform and every configured realm, so that each of their federation checks reports the
/// failure as an `error` instead of vanishing from the results.
pub fn failed(config: &Config, reason: String) -> FactsDocument {
    let mut subjects = vec![Subject::new(PLATFORM_SUBJECT, &PlatformFacts::default())];
    subjects.extend(
        config
            .realms
            .iter()
            .map(|realm| Subject::new(realm.name.clone(), &RealmFacts::default())),
    );
    FactsDocument {
        sources: BTreeMap::from([(Source::Federation, SourceState::Failed(reason))]),
        municipalities: Vec::new(),
        subjects,
    }
}

/// The federation facts of the platform, of every configured realm and of each municipality
/// in `admin_groups` at `now`.
pub async fn collect(
    config: &Config,
    db: &Database,
    now: DateTime<Utc>,
    admin_groups: &[AdminGroups],
) -> Result<FactsDocument, CollectError> {
    let query = |source| CollectError::Query {
        url: redact_url(&config.database),
        source,
    };
    let platform = platform_facts(config, db, now).await.map_err(query)?;
    let statistics = audit_statistics(db, now).await.map_err(query)?;
    let holders = directory::live_holders(db, now).await.map_err(query)?;
    let sign_ins = last_sign_ins(db, now).await.map_err(query)?;
    // The directories as sign-in reaches them; the database handle is only read through.
    let federation =
        setup::build(config, db.clone(), &prometheus::Registry::new()).map_err(|e| e.to_string());
    let mut subjects = vec![Subject::new(PLATFORM_SUBJECT, &platform)];
    let mut listings = BTreeMap::new();
    for realm in &config.realms {
        let mut facts = realm::realm_settings(realm, &config.lockout);
        statistics.fill(&realm.name, &mut facts);
        let users = holders.get(&realm.name).cloned().unwrap_or_default();
        let (departed, listing) = match &federation {
            Ok(federation) => (
                directory::departed(federation, &realm.name, &users).await,
                match federation.realm(&realm.name) {
                    Some(configured) => configured
                        .directory
                        .accounts(accounts::MAX_ACCOUNTS)
                        .await
                        .map_err(|reason| format!("directory of realm {}: {reason}", realm.name)),
                    None => Err(format!("realm {} is not set up", realm.name)),
                },
            ),
            Err(reason) => {
                let reason = format!("directories cannot be set up: {reason}");
                (Err(reason.clone()), Err(reason))
            }
        };
        // A directory that hides its password policy fails only the password facts.
        let mut uncollected = BTreeMap::new();
        let policies = match &federation {
            Ok(federation) => match federation.realm(&realm.name) {
                Some(configured) => configured.directory.password_policies().await,
                None => None,
            },
            Err(_) => None,
        };
        match policies {
            Some(Ok(policies)) => realm::password_facts(&policies, &mut facts),
            Some(Err(reason)) => {
                let reason = format!("password policy of realm {}: {reason}", realm.name);
                for fact in realm::PASSWORD_FACTS {
                    uncollected.insert(fact.to_owned(), reason.clone());
                }
            }
            None => {}
        }
        if let Ok(listing) = &listing {
            facts.enabled_accounts_days_since_sign_in = Some(accounts::days_since_sign_in(
                listing,
                &realm.name,
                &sign_ins,
                now,
            ));
            facts.directory_accounts =
                Some(i64::try_from(listing.accounts.len()).unwrap_or(i64::MAX));
            facts.directory_listing_truncated = Some(listing.truncated);
        }
        let outcome =
            departed.and_then(|count| listing.as_ref().map(|_| count).map_err(Clone::clone));
        listings.insert(realm.name.clone(), listing);
        let mut subject = match outcome {
            Ok(count) => {
                facts.departed_with_access = Some(count);
                Subject::new(realm.name.clone(), &facts)
            }
            Err(reason) => {
                // Source states are kept per subject, not per fact: a directory that does
                // not answer fails the realm's federation source, so every federation check
                // of the realm reports the reason rather than one passing on a guess.
                let mut subject = Subject::new(realm.name.clone(), &facts);
                subject
                    .sources
                    .insert(Source::Federation, SourceState::Failed(reason));
                subject
            }
        };
        subject.uncollected = uncollected;
        subjects.push(subject);
    }
    for municipality in admin_groups {
        subjects.push(municipality_subject(municipality, &listings, &sign_ins));
    }
    Ok(FactsDocument {
        sources: BTreeMap::from([(Source::Federation, SourceState::Collected)]),
        municipalities: Vec::new(),
        subjects,
    })
}

/// A municipality's admin facts from its realm's listing; a realm that is not configured or
/// whose directory could not be listed fails the subject's federation source with the reason.
fn municipality_subject(
    municipality: &AdminGroups,
    listings: &BTreeMap<String, Result<crate::federation::directory::AccountListing, String>>,
    sign_ins: &accounts::LastSignIns,
) -> Subject {
    let listing = match listings.get(&municipality.realm) {
        Some(listing) => listing.clone(),
        None => Err(format!(
            "realm {} of municipality {} is not configured in the federation",
            municipality.realm, municipality.municipality
        )),
    };
    let mut subject = match &listing {
        Ok(listing) => {
            let (members, generic) = accounts::admin_members(listing, &municipality.groups);
            let facts = MunicipalityFacts {
                admin_members: Some(members),
                generic_admin_accounts: Some(generic),
                directory_listing_truncated: Some(listing.truncated),
                admin_sign_ins_24h: Some(accounts::admin_sign_ins(
                    listing,
                    &municipality.realm,
                    &municipality.groups,
                    sign_ins,
                )),
                // novads offers no second factor yet: every admin sign-in is by password
                // alone, and auth.mfa-privileged fails until one exists.
                second_factor_available: Some(false),
                admin_sign_ins_second_factor_24h: Some(0),
                ..MunicipalityFacts::default()
            };
            Subject::new(municipality.municipality.clone(), &facts)
        }
        Err(_) => Subject::new(
            municipality.municipality.clone(),
            &MunicipalityFacts::default(),
        ),
    };
    subject.municipalities = vec![municipality.municipality.clone()];
    if let Err(reason) = listing {
        subject
            .sources
            .insert(Source::Federation, SourceState::Failed(reason));
    }
    subject
}

/// The last successful sign-in of every identity in the audit trail, where the trail starts,
/// and the sign-ins of the 24 hours before `now`.
async fn last_sign_ins(
    db: &Database,
    now: DateTime<Utc>,
) -> Result<accounts::LastSignIns, sqlx::Error> {
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT subject, username, MAX(at) FROM audit_events \
             WHERE event = $1 AND realm IS NOT NULL GROUP BY subject, username",
        )
        .bind(AuditEventKind::LoginSucceeded.as_str())
        .fetch_all(pool)
        .await
    })?;
    let oldest: Option<String> = on_pool!(db, |pool| {
        sqlx::query_scalar("SELECT MIN(at) FROM audit_events")
            .fetch_one(pool)
            .await
    })?;
    let parse = |at: &str| {
        DateTime::parse_from_rfc3339(at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let mut sign_ins = accounts::LastSignIns {
        trail_start: oldest.as_deref().and_then(parse),
        ..accounts::LastSignIns::default()
    };
    for (subject, username, at) in rows {
        if let Some(at) = at.as_deref().and_then(parse) {
            sign_ins.record(subject.into_iter().chain(username), at);
        }
    }
    // `at` is the trail's one fixed-width UTC format, so text order is time order.
    let since = format_time(now - Duration::hours(24));
    let recent: Vec<(Option<String>, Option<String>, i64)> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT subject, username, COUNT(*) FROM audit_events \
             WHERE event = $1 AND realm IS NOT NULL AND at >= $2 GROUP BY subject, username",
        )
        .bind(AuditEventKind::LoginSucceeded.as_str())
        .bind(&since)
        .fetch_all(pool)
        .await
    })?;
    sign_ins.last_24h = recent
        .into_iter()
        .map(|(subject, username, count)| (subject.into_iter().chain(username).collect(), count))
        .collect();
    Ok(sign_ins)
}

async fn platform_facts(
    config: &Config,
    db: &Database,
    now: DateTime<Utc>,
) -> Result<PlatformFacts, sqlx::Error> {
    // Without the key the chain cannot be checked: the fact is then unknown, not intact.
    let verification = match audit::AuditKey::configured(&config.server) {
        Ok(key) => Some(audit::verify(db, &key).await?),
        Err(e) => {
            tracing::warn!(error = %e, "cannot verify the audit trail");
            None
        }
    };
    let oldest: Option<String> = on_pool!(db, |pool| {
        sqlx::query_scalar("SELECT MIN(at) FROM audit_events")
            .fetch_one(pool)
            .await
    })?;
    let keys: Vec<(String, String, Option<String>)> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT algorithm, state, activated_at FROM oidc_signing_keys \
             WHERE state IN ('active', 'next')",
        )
        .fetch_all(pool)
        .await
    })?;
    let (signing_key_age_days, next_signing_key_published) = signing_keys(&keys, now);
    Ok(PlatformFacts {
        audit_chain_intact: verification.as_ref().map(|v| v.first_broken.is_none()),
        audit_rows_verified: verification
            .as_ref()
            .map(|v| i64::try_from(v.rows_checked).unwrap_or(i64::MAX)),
        audit_retention_days: Some(config.audit.retention_days.map_or(0, i64::from)),
        audit_oldest_event_age_days: oldest.as_deref().and_then(|at| age_days(at, now)),
        // No host declares its clock offset to novads yet.
        clock_offset_ms: None,
        signing_key_age_days,
        next_signing_key_published,
    })
}

/// The age of the oldest active signing key, and whether every algorithm with an active key
/// already publishes its next one. Without an active key both stay absent.
fn signing_keys(
    keys: &[(String, String, Option<String>)],
    now: DateTime<Utc>,
) -> (Option<i64>, Option<bool>) {
    let active: Vec<_> = keys
        .iter()
        .filter(|(_, state, _)| state == "active")
        .collect();
    if active.is_empty() {
        return (None, None);
    }
    let age = active
        .iter()
        .filter_map(|(_, _, activated)| activated.as_deref().and_then(|at| age_days(at, now)))
        .max();
    let next = active.iter().all(|(algorithm, _, _)| {
        keys.iter()
            .any(|(other, state, _)| other == algorithm && state == "next")
    });
    (age, Some(next))
}

fn age_days(at: &str, now: DateTime<Utc>) -> Option<i64> {
    let at = DateTime::parse_from_rfc3339(at).ok()?;
    Some((now - at.with_timezone(&Utc)).num_days().max(0))
}

/// Counts of audit events per realm and kind: the last 24 hours, and lockouts over the seven
/// days before them.
#[derive(Debug, Default)]
struct AuditStatistics {
    last_day: BTreeMap<(String, String), i64>,
    lockouts_week_before: BTreeMap<String, i64>,
}

impl AuditStatistics {
    fn count(&self, realm: &str, kind: AuditEventKind) -> i64 {
        self.last_day
            .get(&(realm.to_owned(), kind.as_str().to_owned()))
            .copied()
            .unwrap_or(0)
    }

    fn fill(&self, realm: &str, facts: &mut RealmFacts) {
        let succeeded = self.count(realm, AuditEventKind::LoginSucceeded);
        let failed = self.count(realm, AuditEventKind::LoginFailed);
        facts.sign_ins_24h = Some(succeeded + failed);
        facts.failed_sign_ins_24h = Some(failed);
        facts.lockouts_24h = Some(self.count(realm, AuditEventKind::LockedOut));
        let week = self.lockouts_week_before.get(realm).copied().unwrap_or(0);
        facts.lockouts_daily_average_7d = Some(week as f64 / 7.0);
    }
}

async fn audit_statistics(
    db: &Database,
    now: DateTime<Utc>,
) -> Result<AuditStatistics, sqlx::Error> {
    // `at` is RFC 3339 text of one fixed width, so it compares correctly as text.
    let day_ago = format_time(now - Duration::hours(24));
    let week_before = format_time(now - Duration::hours(24 * 8));
    let rows: Vec<(String, String, i64)> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT realm, event, CAST(COUNT(*) AS BIGINT) FROM audit_events \
             WHERE at >= $1 AND realm IS NOT NULL GROUP BY realm, event",
        )
        .bind(&day_ago)
        .fetch_all(pool)
        .await
    })?;
    let lockouts: Vec<(String, i64)> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT realm, CAST(COUNT(*) AS BIGINT) FROM audit_events \
             WHERE event = $1 AND at >= $2 AND at < $3 AND realm IS NOT NULL GROUP BY realm",
        )
        .bind(AuditEventKind::LockedOut.as_str())
        .bind(&week_before)
        .bind(&day_ago)
        .fetch_all(pool)
        .await
    })?;
    Ok(AuditStatistics {
        last_day: rows
            .into_iter()
            .map(|(realm, event, count)| ((realm, event), count))
            .collect(),
        lockouts_week_before: lockouts.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(
        algorithm: &str,
        state: &str,
        activated: Option<&str>,
    ) -> (String, String, Option<String>) {
        (algorithm.into(), state.into(), activated.map(str::to_owned))
    }

    #[test]
    fn signing_key_age_and_next_key() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        assert_eq!(signing_keys(&[], now), (None, None));
        let keys = [
            key("ES256", "active", Some("2026-10-02T00:00:00.000000Z")),
            key("ES256", "next", None),
            key("RS256", "active", Some("2026-11-01T00:00:00.000000Z")),
        ];
        assert_eq!(signing_keys(&keys, now), (Some(60), Some(false)));
        assert_eq!(signing_keys(&keys[..2], now), (Some(60), Some(true)));
    }
}
