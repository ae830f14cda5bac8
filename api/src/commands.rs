//! The administrative commands behind `novads realm test` and `novads audit ...`: each loads the
//! configuration, opens the database and runs exactly the code the server runs.

use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};

use crate::config::{self, ConfigErrors, Mode};
use crate::db::{Database, DbError};
use crate::federation::audit::{
    self, AuditKey, ChainHead, ExportFilter, ExportFormat, Verification,
};
use crate::federation::setup::{self, SetupError};
use crate::federation::{Federation, LoginRequest, engine::TrustUsed};
use crate::oidc::keys::{KeyEncryptionKey, KeyError, KeyPolicy, SigningKeys};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Export(#[from] audit::ExportError),
    #[error("audit: {0}")]
    Audit(#[from] sqlx::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("signing keys: {0}")]
    Keys(#[from] KeyError),
}

async fn open(config_path: &Path) -> Result<(config::Config, Database), CommandError> {
    let config = config::load(config_path, Mode::Production)?;
    let db = Database::open_configured(&config).await?;
    Ok((config, db))
}

/// `novads realm test`: one sign-in through the production path. Returns the JSON report and
/// whether the user was signed in.
pub async fn realm_test(
    config_path: &Path,
    username: &str,
    client_id: Option<&str>,
    password: &str,
) -> Result<(Value, bool), CommandError> {
    let (config, db) = open(config_path).await?;
    let federation = setup::build(&config, db, &prometheus::Registry::new())?;
    let user_agent = format!("novads realm test/{}", env!("CARGO_PKG_VERSION"));
    Ok(test_sign_in(&federation, username, client_id, password, user_agent).await)
}

/// One sign-in through [`Federation::login`], reported as `novads realm test` prints it (and
/// the admin API's `POST /api/v1/realms/{name}/test` answers): the JSON report and whether the
/// user was signed in. The sign-in is audited like any other.
pub async fn test_sign_in(
    federation: &Federation,
    username: &str,
    client_id: Option<&str>,
    password: &str,
    user_agent: String,
) -> (Value, bool) {
    let request = LoginRequest {
        username: username.to_owned(),
        password: password.to_owned(),
        client_id: client_id.map(str::to_owned),
        source_ip: None,
        user_agent: Some(user_agent),
    };
    match federation.login(&request).await {
        Ok(identity) => {
            let trust = identity
                .trust
                .as_ref()
                .map(|TrustUsed { trusting, trusted }| json!({ "trusting": trusting, "trusted": trusted }));
            (
                json!({
                    "result": "signed_in",
                    "subject": identity.subject,
                    "username": identity.username,
                    "realm": identity.realm,
                    "email": identity.email,
                    "name": identity.name,
                    "groups": identity.groups,
                    "roles": identity.roles,
                    "trust": trust,
                    "directory": identity.directory,
                    "audit_id": identity.audit_id,
                }),
                true,
            )
        }
        Err(refused) => (
            json!({
                "result": "refused",
                "reason": refused.reason.as_str(),
                "detail": refused.detail,
                "audit_id": refused.audit_id,
            }),
            false,
        ),
    }
}

/// `novads audit export`: writes matching rows to `out`, returns how many.
pub async fn audit_export(
    config_path: &Path,
    filter: &ExportFilter,
    format: ExportFormat,
    out: &mut (dyn std::io::Write + Send),
) -> Result<u64, CommandError> {
    let (_, db) = open(config_path).await?;
    Ok(audit::export(&db, filter, format, out).await?)
}

/// `novads audit verify`: checks the chain under the configured key and, with `expect`, that
/// it still passes through a head recorded earlier.
pub async fn audit_verify(
    config_path: &Path,
    expect: Option<ChainHead>,
) -> Result<Verification, CommandError> {
    let (config, db) = open(config_path).await?;
    let key = AuditKey::configured(&config.server)?;
    Ok(audit::verify_expecting(&db, &key, expect).await?)
}

/// `novads keys rotate`: per algorithm, the active key retires (published until its tokens
/// expire), the next key becomes active, and a new next key is published. A next key younger
/// than a day is left alone unless `now` is set (after a key compromise), so relying parties
/// have fetched it before it signs.
pub async fn keys_rotate(config_path: &Path, now: bool) -> Result<Value, CommandError> {
    let (config, db) = open(config_path).await?;
    let kek = KeyEncryptionKey::configured(&config.server)?;
    // Creates the first keys if this installation has none yet.
    SigningKeys::load_or_init(&db, &kek).await?;
    let mut policy = KeyPolicy::default();
    if now {
        policy.min_next_age = std::time::Duration::ZERO;
    }
    let report = SigningKeys::rotate(&db, &kek, &policy).await?;
    Ok(json!({
        "rotated": report.rotated.iter().map(|r| json!({
            "algorithm": r.algorithm.as_str(),
            "retired": r.retired,
            "retired_published_until": r.retired_until.to_rfc3339(),
            "activated": r.activated,
            "next": r.next,
        })).collect::<Vec<_>>(),
        "postponed": report.postponed.iter().map(|p| json!({
            "algorithm": p.algorithm.as_str(),
            "next": p.next,
            "eligible_at": p.eligible_at.to_rfc3339(),
        })).collect::<Vec<_>>(),
        "deleted": report.deleted,
    }))
}

/// Parses `--since`/`--until`: an RFC 3339 time or a date (midnight UTC).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|midnight| midnight.and_utc())
        .ok_or_else(|| format!("{text:?} is neither an RFC 3339 time nor a YYYY-MM-DD date"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_dates() {
        assert_eq!(
            parse_time("2026-11-01").expect("date").to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-01T12:30:00+02:00")
                .expect("time")
                .to_rfc3339(),
            "2026-11-01T10:30:00+00:00"
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2026-13-01").is_err());
    }
}
