//! Builds the [`Federation`] from the configuration: directories with their secrets and CAs,
//! applications, trusts, lockout counters and the audit writer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::audit::{AuditKey, AuditLog};
use super::directory::Directory;
use super::directory::ldap::LdapDirectory;
use super::directory::static_users::StaticDirectory;
use super::engine::{Application, Federation, Realm};
use super::lockout::{LockoutPolicy, LockoutStore};
use super::metrics::FederationMetrics;
use super::trust::TrustPolicy;
use crate::config::{Config, LdapConfig, LockoutConfig};
use crate::db::Database;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("realms[{index}].ldap.{key}: {message}")]
    Realm {
        index: usize,
        key: &'static str,
        message: String,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("audit trail key: {0}")]
    AuditKey(#[from] crate::oidc::keys::KeyError),
}

/// Everything sign-in needs, from a validated configuration; the audit trail is keyed from
/// the configured key-encryption key.
pub fn build(config: &Config, db: Database, registry: &Registry) -> Result<Federation, SetupError> {
    let audit_key = AuditKey::configured(&config.server)?;
    build_with_audit_key(config, db, registry, audit_key)
}

/// [`build`] with the audit key given.
pub fn build_with_audit_key(
    config: &Config,
    db: Database,
    registry: &Registry,
    audit_key: AuditKey,
) -> Result<Federation, SetupError> {
    let mut realms = Vec::with_capacity(config.realms.len());
    for (index, realm) in config.realms.iter().enumerate() {
        let directory = match (&realm.ldap, &realm.static_directory) {
            (Some(ldap), _) => Directory::Ldap(Box::new(ldap_directory(index, ldap)?)),
            (None, Some(users)) => Directory::Static(StaticDirectory::new(users)),
            // Validation guarantees one directory per realm.
            (None, None) => continue,
        };
        realms.push(Realm {
            name: realm.name.clone(),
            display_name: realm.display_name.clone(),
            directory,
        });
    }
    let applications = config
        .clients
        .iter()
        .map(|c| Application {
            client_id: c.client_id.clone(),
            realm: c.realm.clone(),
        })
        .collect();
    let metrics = FederationMetrics::register(registry)?;
    Ok(Federation::new(
        realms,
        applications,
        TrustPolicy::from_config(&config.trusts),
        LockoutStore::new(db.clone(), lockout_policy(&config.lockout)),
        AuditLog::start(db, audit_key),
        metrics,
    ))
}

pub fn lockout_policy(config: &LockoutConfig) -> LockoutPolicy {
    LockoutPolicy {
        max_failures: config.max_failures,
        window: Duration::from_secs(config.window_seconds),
        lock_duration: Duration::from_secs(config.lock_seconds),
        ..LockoutPolicy::default()
    }
}

fn ldap_directory(index: usize, ldap: &LdapConfig) -> Result<LdapDirectory, SetupError> {
    let fail = |key, message: String| SetupError::Realm {
        index,
        key,
        message,
    };
    let password = if let Some(file) = &ldap.bind_password_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            fail(
                "bind_password_file",
                format!("cannot read {}: {e}", file.display()),
            )
        })?;
        Some(text.trim_end_matches(['\r', '\n']).to_owned())
    } else if let Some(var) = &ldap.bind_password_env {
        Some(std::env::var(var).map_err(|_| {
            fail(
                "bind_password_env",
                format!("environment variable {var} is not set"),
            )
        })?)
    } else {
        ldap.bind_password.clone()
    };
    let tls = match &ldap.ca_file {
        Some(path) => Some(tls_config(path).map_err(|message| fail("ca_file", message))?),
        None => None,
    };
    Ok(LdapDirectory::new(ldap, password, tls))
}

/// A TLS client configuration that trusts exactly the CAs in `path` (aws-lc-rs provider).
pub fn tls_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: unusable certificate: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
