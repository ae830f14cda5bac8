//! The configuration file of `novads serve` (docs/configuration.md).
//!
//! Loading runs in three steps so that each can be tested on its own:
//! 1. [`parse`] turns YAML text into typed [`Config`] (pure; unknown keys, wrong types and
//!    duplicate YAML keys are errors naming the key path);
//! 2. [`Config::apply_env`] applies the documented environment overrides;
//! 3. [`Config::validate`] checks cross-field rules (pure) and [`Config::check_files`] checks that
//!    every referenced file or environment variable can be read (I/O).
//!
//! Every problem becomes one [`ConfigError`]: a key path and what is wrong with it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::oidc::algorithm::SigningAlgorithm;

mod admin_api;
mod validate;

pub use admin_api::{AdminApiConfig, AdminRateLimitConfig, PlatformRole, ServiceClientConfig};

/// Largest configuration file we read; anything bigger is a mistake, not a configuration.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Environment variable that overrides `server.listen`.
pub const ENV_LISTEN: &str = "NOVADS_LISTEN";
/// Environment variable that overrides `database`.
pub const ENV_DATABASE_URL: &str = "NOVADS_DATABASE_URL";

/// How strictly secrets are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `novads serve`: secrets must come from files or environment variables.
    Production,
    /// `novads dev`: inline secrets are accepted for convenience.
    Dev,
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    /// `sqlite://path` or `postgres://user@host/db`; the scheme picks the backend.
    pub database: String,
    /// File holding the PostgreSQL password, so the URL never has to carry it.
    #[serde(default)]
    pub database_password_file: Option<PathBuf>,
    #[serde(default)]
    pub realms: Vec<RealmConfig>,
    #[serde(default)]
    pub trusts: Vec<TrustConfig>,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    #[serde(default)]
    pub lockout: LockoutConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    /// Who may use the admin API at `/api/v1`.
    #[serde(default)]
    pub admin_api: AdminApiConfig,
}

/// Brute-force protection (defaults follow the national password rules: 5 failures in 15
/// minutes lock the account for 15 minutes).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    pub max_failures: u32,
    pub window_seconds: u64,
    pub lock_seconds: u64,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window_seconds: 15 * 60,
            lock_seconds: 15 * 60,
        }
    }
}

/// The audit trail.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Rows older than this many days are pruned (behind a checkpoint that keeps the chain
    /// verifiable); `None` keeps every row.
    pub retention_days: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Socket address to listen on, e.g. `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Public base URL of this installation; the OIDC issuer.
    pub issuer: String,
    /// How long in-flight requests may run after SIGTERM before the server stops anyway.
    #[serde(default = "default_shutdown_grace_seconds")]
    pub shutdown_grace_seconds: u64,
    /// File holding the key that encrypts token-signing keys at rest (32 bytes: raw, 64 hex
    /// digits or base64).
    #[serde(default)]
    pub key_encryption_key_file: Option<PathBuf>,
    /// Environment variable holding that key instead.
    #[serde(default)]
    pub key_encryption_key_env: Option<String>,
    /// Reverse proxies (CIDRs) whose `Forwarded` / `X-Forwarded-For` headers name the client;
    /// empty: the headers are ignored and the TCP peer is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A second address serving `/healthz`, `/readyz` and `/metrics`, which then leave the
    /// public listener (`/healthz` stays on both).
    #[serde(default)]
    pub management_listen: Option<SocketAddr>,
    /// Seconds a client has to send a request's header; also the longest a keep-alive
    /// connection may sit idle.
    #[serde(default = "default_header_read_timeout_seconds")]
    pub header_read_timeout_seconds: u64,
    /// Connections open at once on each listener.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Sign-ins (`/oidc/authorize` without a session, each rendering a login page with a
    /// sealed request) one client address may start per minute on one replica.
    #[serde(default = "default_authorization_requests_per_minute")]
    pub authorization_requests_per_minute: u32,
}

/// Default of `server.authorization_requests_per_minute`: generous, because a
/// municipality's office behind one address starts many sign-ins at nine in the morning.
pub const DEFAULT_AUTHORIZATION_REQUESTS_PER_MINUTE: u32 = 120;

fn default_authorization_requests_per_minute() -> u32 {
    DEFAULT_AUTHORIZATION_REQUESTS_PER_MINUTE
}

fn default_header_read_timeout_seconds() -> u64 {
    10
}

fn default_max_connections() -> u32 {
    1024
}

fn default_shutdown_grace_seconds() -> u64 {
    20
}

/// One authentication source: a municipality's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmConfig {
    /// Short lowercase name; users sign in as `name@realm`.
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub ldap: Option<LdapConfig>,
    #[serde(default, rename = "static")]
    pub static_directory: Option<StaticDirectoryConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// Tried in order; later URLs are failovers.
    pub urls: Vec<String>,
    #[serde(default)]
    pub start_tls: bool,
    /// Allows plain `ldap://` without StartTLS. The security monitor flags it.
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub bind_dn: Option<String>,
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    #[serde(default)]
    pub bind_password_env: Option<String>,
    /// Inline password: accepted by `novads dev` only.
    #[serde(default)]
    pub bind_password: Option<String>,
    pub user_base: String,
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    #[serde(default)]
    pub attributes: LdapAttributes,
    /// Users matching this filter are disabled, e.g. Active Directory's
    /// `(userAccountControl:1.2.840.113556.1.4.803:=2)`.
    #[serde(default)]
    pub disabled_filter: Option<String>,
    /// Find groups by searching for group entries that list the user, instead of (or besides)
    /// reading `attributes.groups` from the user entry.
    #[serde(default)]
    pub group_search: Option<GroupSearchConfig>,
    /// Connect and per-operation timeout.
    #[serde(default = "default_ldap_timeout_seconds")]
    pub timeout_seconds: u64,
    /// Connections kept open per directory server for user binds.
    #[serde(default = "default_ldap_pool_size")]
    pub pool_size: usize,
    /// Keep a found user's DN, attributes and groups this long, so that a repeated sign-in
    /// needs only the bind (which still checks password and lock every time). Group and
    /// `disabled_filter` changes then take up to this long to show. 0 (default) turns it off.
    #[serde(default)]
    pub entry_cache_seconds: u64,
    /// The password policy entry (OpenLDAP ppolicy) the security monitor reads; when unset it
    /// reads every `pwdPolicy` entry in the naming context of `user_base`.
    #[serde(default)]
    pub password_policy_dn: Option<String>,
}

fn default_ldap_pool_size() -> usize {
    8
}

/// Group lookup by search: `(member={dn})` finds the groups that list the user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSearchConfig {
    pub base: String,
    /// `{dn}` is the member's DN, `{username}` the user name; both are escaped.
    #[serde(default = "default_group_filter")]
    pub filter: String,
    /// Attribute of the group entry that names the group.
    #[serde(default = "default_group_name_attribute")]
    pub name_attribute: String,
    /// How many levels of groups-in-groups to follow (0: direct membership only).
    #[serde(default)]
    pub nested_depth: u32,
}

fn default_group_filter() -> String {
    "(|(member={dn})(uniqueMember={dn}))".to_owned()
}

fn default_group_name_attribute() -> String {
    "cn".to_owned()
}

impl LdapConfig {
    /// A directory at `urls` with users under `user_base`, every other key at its default
    /// (as if only these two were written in the file).
    pub fn new(urls: Vec<String>, user_base: impl Into<String>) -> Self {
        Self {
            urls,
            start_tls: false,
            insecure: false,
            ca_file: None,
            bind_dn: None,
            bind_password_file: None,
            bind_password_env: None,
            bind_password: None,
            user_base: user_base.into(),
            user_filter: default_user_filter(),
            attributes: LdapAttributes::default(),
            disabled_filter: None,
            group_search: None,
            timeout_seconds: default_ldap_timeout_seconds(),
            pool_size: default_ldap_pool_size(),
            entry_cache_seconds: 0,
            password_policy_dn: None,
        }
    }
}

fn default_user_filter() -> String {
    "(&(objectClass=inetOrgPerson)(uid={username}))".to_owned()
}

fn default_ldap_timeout_seconds() -> u64 {
    5
}

/// Which LDAP attribute carries which piece of a user.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LdapAttributes {
    /// Immutable identifier the token subject is derived from.
    pub id: String,
    pub username: String,
    pub email: String,
    pub name: String,
    pub groups: String,
}

impl Default for LdapAttributes {
    fn default() -> Self {
        Self {
            id: "entryUUID".to_owned(),
            username: "uid".to_owned(),
            email: "mail".to_owned(),
            name: "cn".to_owned(),
            groups: "memberOf".to_owned(),
        }
    }
}

/// An embedded directory for development and very small sites.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticDirectoryConfig {
    pub users: Vec<StaticUserConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticUserConfig {
    pub username: String,
    /// PHC-format argon2id hash.
    pub password_hash: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub disabled: bool,
}

/// A directed, non-transitive trust: `trusting`'s applications accept `trusted`'s users.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    pub trusting: String,
    pub trusted: String,
    /// Groups of the trusted realm admitted; empty admits every user.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Trusted realm's group -> role in the trusting realm.
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
    /// Client ids of the trusting realm's applications this trust admits to; empty admits to
    /// every application of the trusting realm.
    #[serde(default)]
    pub clients: Vec<String>,
}

/// An application (OIDC relying party) owned by one realm.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    pub realm: String,
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    pub secret_hash: Option<String>,
    #[serde(default)]
    pub public: bool,
    /// The JWS algorithm of this client's ID tokens (and, for consistency, its access tokens):
    /// OIDC Dynamic Client Registration's metadata of the same name. ES256 unless the relying
    /// party accepts only RSA, as some do; unknown names are refused when the file is read.
    #[serde(default)]
    pub id_token_signed_response_alg: SigningAlgorithm,
}

/// One problem in a configuration: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `realms[1].ldap.urls[0]`; empty for the document as a whole.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration file, each printable as one line.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// The file the errors are about (for the message prefix).
    pub source_name: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {e}", self.source_name)?;
        }
        Ok(())
    }
}

/// Reads, parses, overrides from the environment and validates a configuration file.
pub fn load(path: &Path, mode: Mode) -> Result<Config, ConfigErrors> {
    let source_name = path.display().to_string();
    let fail = |errors: Vec<ConfigError>| ConfigErrors {
        source_name: source_name.clone(),
        errors,
    };
    let text = read_config_file(path).map_err(|e| fail(vec![e]))?;
    let mut config = parse(&text).map_err(|e| fail(vec![e]))?;
    config
        .apply_env(&|name| std::env::var(name).ok())
        .map_err(|e| fail(vec![e]))?;
    let mut errors = config.validate(mode);
    errors.extend(config.check_files());
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(fail(errors))
    }
}

fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let unreadable = |e: std::io::Error| ConfigError::new("", format!("cannot read file: {e}"));
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(ConfigError::new("", "not a regular file"));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::new(
            "",
            format!(
                "file is {} bytes; the limit is {MAX_CONFIG_BYTES}",
                meta.len()
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(unreadable)?;
    String::from_utf8(bytes).map_err(|_| ConfigError::new("", "file is not valid UTF-8"))
}

/// Parses YAML text into a typed configuration. Pure.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    // YAML first becomes a JSON value (duplicate keys are rejected here), then the typed
    // structs, so that serde_path_to_error can name the exact key path of a type mistake.
    let value: serde_json::Value = serde_saphyr::from_str(text)
        .map_err(|e| ConfigError::new("", format!("invalid YAML: {}", one_line(&e.to_string()))))?;
    if value.is_null() {
        return Err(ConfigError::new("", "the file is empty"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::new(path, describe_serde_error(&e.into_inner().to_string()))
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Rewords serde's messages in the vocabulary of a configuration file.
fn describe_serde_error(message: &str) -> String {
    let message = one_line(message);
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return format!("unknown key {rest}");
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("required key {rest} is missing");
    }
    message
}

impl Config {
    /// Applies `NOVADS_LISTEN` and `NOVADS_DATABASE_URL`. `lookup` reads the environment.
    pub fn apply_env(
        &mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(listen) = lookup(ENV_LISTEN) {
            self.server.listen = listen.trim().parse().map_err(|_| {
                ConfigError::new(
                    ENV_LISTEN,
                    format!("{listen:?} is not a socket address like 127.0.0.1:8080"),
                )
            })?;
        }
        if let Some(url) = lookup(ENV_DATABASE_URL) {
            self.database = url.trim().to_owned();
        }
        Ok(())
    }

    /// The realm with this name.
    pub fn realm(&self, name: &str) -> Option<&RealmConfig> {
        self.realms.iter().find(|r| r.name == name)
    }
}

/// The URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // set_password only fails for URLs that cannot have credentials, and this one has.
            let _ = parsed.set_password(Some("REDACTED"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests;
