//! The configuration file of `novads serve` (DESIGN.md § Configuration).
//!
//! Loading runs in three steps so that each can be tested on its own:
//! 1. [`parse`] turns YAML text into typed [`Config`] (pure; unknown keys, wrong types and
//!    duplicate YAML keys are errors naming the key path);
//! 2. [`Config::apply_env`] applies the documented environment overrides;
//! 3. [`Config::validate`] checks cross-field rules (pure) and [`Config::check_files`] checks that
//!    every referenced file or environment variable can be read (I/O).
//!
//! Every problem becomes one [`ConfigError`]: a key path and what is wrong with it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::oidc::algorithm::SigningAlgorithm;

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

    /// Cross-field rules that need no I/O. Returns every problem found.
    pub fn validate(&self, mode: Mode) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut err = |path: String, message: String| errors.push(ConfigError::new(path, message));

        match Url::parse(&self.server.issuer) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                if url.query().is_some() || url.fragment().is_some() {
                    err(
                        "server.issuer".into(),
                        "must not have a query or fragment".into(),
                    );
                }
                if url.scheme() == "http" && mode == Mode::Production && !is_loopback(&url) {
                    err(
                        "server.issuer".into(),
                        "must use https (plain http is allowed on loopback addresses only)".into(),
                    );
                }
            }
            _ => err(
                "server.issuer".into(),
                format!("{:?} is not an absolute http(s) URL", self.server.issuer),
            ),
        }

        match (
            &self.server.key_encryption_key_file,
            &self.server.key_encryption_key_env,
        ) {
            (Some(_), Some(_)) => err(
                "server".into(),
                "give the key encryption key once: key_encryption_key_file or key_encryption_key_env"
                    .into(),
            ),
            (None, None) => err(
                "server.key_encryption_key_file".into(),
                "required: the key that encrypts token-signing keys at rest (or \
                 key_encryption_key_env); create one with `head -c 32 /dev/urandom > FILE`"
                    .into(),
            ),
            _ => {}
        }

        self.validate_database(mode, &mut err);

        let mut realm_index: HashMap<&str, usize> = HashMap::new();
        for (i, realm) in self.realms.iter().enumerate() {
            let path = format!("realms[{i}]");
            if let Some(problem) = name_problem(&realm.name) {
                err(
                    format!("{path}.name"),
                    format!("{:?} {problem}", realm.name),
                );
            } else if let Some(first) = realm_index.get(realm.name.as_str()) {
                err(
                    format!("{path}.name"),
                    format!(
                        "duplicate realm {:?} (first defined at realms[{first}])",
                        realm.name
                    ),
                );
            } else {
                realm_index.insert(&realm.name, i);
            }
            match (&realm.ldap, &realm.static_directory) {
                (Some(ldap), None) => validate_ldap(ldap, &format!("{path}.ldap"), mode, &mut err),
                (None, Some(dir)) => validate_static(dir, &format!("{path}.static"), &mut err),
                (Some(_), Some(_)) => err(
                    path,
                    "has both `ldap` and `static`; a realm has exactly one directory".into(),
                ),
                (None, None) => err(
                    path,
                    "has no directory; add an `ldap` or a `static` section".into(),
                ),
            }
        }

        let mut trust_pairs: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, trust) in self.trusts.iter().enumerate() {
            let path = format!("trusts[{i}]");
            for (key, realm) in [("trusting", &trust.trusting), ("trusted", &trust.trusted)] {
                if !realm_index.contains_key(realm.as_str()) {
                    err(format!("{path}.{key}"), format!("unknown realm {realm:?}"));
                }
            }
            if trust.trusting == trust.trusted {
                err(
                    path.clone(),
                    "a realm cannot trust itself (its own users always have access)".into(),
                );
            }
            if let Some(first) = trust_pairs.insert((&trust.trusting, &trust.trusted), i) {
                err(
                    path.clone(),
                    format!(
                        "duplicate trust {} -> {} (first defined at trusts[{first}])",
                        trust.trusting, trust.trusted
                    ),
                );
            }
            for (j, group) in trust.groups.iter().enumerate() {
                if let Some(problem) = group_problem(group) {
                    err(
                        format!("{path}.groups[{j}]"),
                        format!("{group:?} {problem}"),
                    );
                }
            }
            for group in trust.roles.keys() {
                if !trust.groups.is_empty() && !trust.groups.contains(group) {
                    err(
                        format!("{path}.roles.{group}"),
                        "maps a group that this trust does not admit (add it to `groups`)".into(),
                    );
                }
            }
        }

        let lockout = &self.lockout;
        if lockout.max_failures == 0 || lockout.max_failures > 1000 {
            err(
                "lockout.max_failures".into(),
                "must be between 1 and 1000".into(),
            );
        }
        for (key, value) in [
            ("window_seconds", lockout.window_seconds),
            ("lock_seconds", lockout.lock_seconds),
        ] {
            if value == 0 || value > 7 * 24 * 3600 {
                err(
                    format!("lockout.{key}"),
                    "must be between 1 second and 7 days".into(),
                );
            }
        }
        if self.audit.retention_days == Some(0) {
            err(
                "audit.retention_days".into(),
                "must be at least 1 (omit it to keep every row)".into(),
            );
        }

        let mut client_index: HashMap<&str, usize> = HashMap::new();
        for (i, client) in self.clients.iter().enumerate() {
            let path = format!("clients[{i}]");
            if let Some(problem) = client_id_problem(&client.client_id) {
                err(
                    format!("{path}.client_id"),
                    format!("{:?} {problem}", client.client_id),
                );
            } else if let Some(first) = client_index.insert(&client.client_id, i) {
                err(
                    format!("{path}.client_id"),
                    format!(
                        "duplicate client {:?} (first defined at clients[{first}])",
                        client.client_id
                    ),
                );
            }
            if !realm_index.contains_key(client.realm.as_str()) {
                err(
                    format!("{path}.realm"),
                    format!("unknown realm {:?}", client.realm),
                );
            }
            if client.redirect_uris.is_empty() {
                err(
                    format!("{path}.redirect_uris"),
                    "needs at least one redirect URI".into(),
                );
            }
            for (key, uris) in [
                ("redirect_uris", &client.redirect_uris),
                (
                    "post_logout_redirect_uris",
                    &client.post_logout_redirect_uris,
                ),
            ] {
                for (j, uri) in uris.iter().enumerate() {
                    if let Some(problem) = redirect_uri_problem(uri, mode) {
                        err(format!("{path}.{key}[{j}]"), format!("{uri:?} {problem}"));
                    }
                }
            }
            match (&client.secret_hash, client.public) {
                (Some(_), true) => err(
                    format!("{path}.secret_hash"),
                    "a public client has no secret; remove it or set `public: false`".into(),
                ),
                (None, false) => err(
                    format!("{path}.secret_hash"),
                    "a confidential client needs a secret hash (or set `public: true`)".into(),
                ),
                (Some(hash), false) => {
                    if let Some(problem) = argon2id_problem(hash) {
                        err(format!("{path}.secret_hash"), problem);
                    }
                }
                (None, true) => {}
            }
        }
        errors
    }

    fn validate_database(&self, mode: Mode, err: &mut impl FnMut(String, String)) {
        let url = &self.database;
        if url.starts_with("sqlite:") {
            if self.database_password_file.is_some() {
                err(
                    "database_password_file".into(),
                    "SQLite has no password; remove this key".into(),
                );
            }
            return;
        }
        match Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "postgres" | "postgresql") => {
                if parsed.password().is_some() && mode == Mode::Production {
                    err(
                        "database".into(),
                        "the URL carries an inline password; put it in `database_password_file` \
                         or the PGPASSWORD environment variable"
                            .into(),
                    );
                }
            }
            _ => err(
                "database".into(),
                format!(
                    "{:?} is not a database URL (expected sqlite://PATH or postgres://USER@HOST/DB)",
                    redact_url(url)
                ),
            ),
        }
    }

    /// Checks that every file and environment variable the configuration refers to can be
    /// read. Reports every unreadable reference.
    pub fn check_files(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if let Some(file) = &self.database_password_file {
            check_readable(file, "database_password_file", &mut errors);
        }
        if let Some(file) = &self.server.key_encryption_key_file {
            check_readable(file, "server.key_encryption_key_file", &mut errors);
        }
        if let Some(var) = &self.server.key_encryption_key_env
            && std::env::var_os(var).is_none_or(|v| v.is_empty())
        {
            errors.push(ConfigError::new(
                "server.key_encryption_key_env",
                format!("environment variable {var} is not set"),
            ));
        }
        for (i, realm) in self.realms.iter().enumerate() {
            let Some(ldap) = &realm.ldap else { continue };
            let path = format!("realms[{i}].ldap");
            if let Some(file) = &ldap.ca_file {
                check_readable(file, &format!("{path}.ca_file"), &mut errors);
            }
            if let Some(file) = &ldap.bind_password_file {
                check_readable(file, &format!("{path}.bind_password_file"), &mut errors);
            }
            if let Some(var) = &ldap.bind_password_env
                && std::env::var_os(var).is_none_or(|v| v.is_empty())
            {
                errors.push(ConfigError::new(
                    format!("{path}.bind_password_env"),
                    format!("environment variable {var} is not set"),
                ));
            }
        }
        errors
    }

    /// The realm with this name.
    pub fn realm(&self, name: &str) -> Option<&RealmConfig> {
        self.realms.iter().find(|r| r.name == name)
    }
}

fn validate_ldap(ldap: &LdapConfig, path: &str, mode: Mode, err: &mut impl FnMut(String, String)) {
    if ldap.urls.is_empty() {
        err(format!("{path}.urls"), "needs at least one URL".into());
    }
    for (i, raw) in ldap.urls.iter().enumerate() {
        let key = format!("{path}.urls[{i}]");
        match Url::parse(raw) {
            Ok(url) if url.host().is_none() => err(key, format!("{raw:?} has no host")),
            Ok(url) if url.scheme() == "ldaps" => {
                if ldap.start_tls {
                    err(
                        key,
                        "StartTLS applies to ldap:// URLs; ldaps:// is already encrypted".into(),
                    );
                }
            }
            Ok(url) if url.scheme() == "ldap" => {
                if !ldap.start_tls && !ldap.insecure {
                    err(
                        key,
                        format!(
                            "{raw:?} is unencrypted; use ldaps://, set `start_tls: true`, or \
                             accept the risk with `insecure: true`"
                        ),
                    );
                }
            }
            Ok(_) => err(key, format!("{raw:?} must start with ldaps:// or ldap://")),
            Err(e) => err(key, format!("{raw:?} is not a URL: {e}")),
        }
    }
    let secret_refs = [
        ldap.bind_password_file.is_some(),
        ldap.bind_password_env.is_some(),
        ldap.bind_password.is_some(),
    ]
    .iter()
    .filter(|given| **given)
    .count();
    if secret_refs > 1 {
        err(
            path.to_owned(),
            "give the bind password once: bind_password_file, bind_password_env or bind_password"
                .into(),
        );
    }
    if ldap.bind_password.is_some() && mode == Mode::Production {
        err(
            format!("{path}.bind_password"),
            "inline secrets are accepted by `novads dev` only; use bind_password_file or \
             bind_password_env"
                .into(),
        );
    }
    match (&ldap.bind_dn, secret_refs) {
        (Some(_), 0) => err(
            path.to_owned(),
            "bind_dn needs a password: bind_password_file or bind_password_env".into(),
        ),
        (None, n) if n > 0 => err(
            format!("{path}.bind_dn"),
            "a bind password is given but no bind_dn".into(),
        ),
        _ => {}
    }
    if ldap.user_base.trim().is_empty() {
        err(format!("{path}.user_base"), "must not be empty".into());
    }
    let filter = &ldap.user_filter;
    if !filter.contains("{username}") {
        err(
            format!("{path}.user_filter"),
            "must contain the {username} placeholder".into(),
        );
    } else if !is_parenthesised(filter) {
        err(
            format!("{path}.user_filter"),
            format!("{filter:?} is not a parenthesised LDAP filter"),
        );
    }
    if let Some(filter) = &ldap.disabled_filter
        && !is_parenthesised(filter)
    {
        err(
            format!("{path}.disabled_filter"),
            format!("{filter:?} is not a parenthesised LDAP filter"),
        );
    }
    if let Some(groups) = &ldap.group_search {
        if groups.base.trim().is_empty() {
            err(
                format!("{path}.group_search.base"),
                "must not be empty".into(),
            );
        }
        if !groups.filter.contains("{dn}") && !groups.filter.contains("{username}") {
            err(
                format!("{path}.group_search.filter"),
                "must contain the {dn} or {username} placeholder".into(),
            );
        } else if !is_parenthesised(&groups.filter) {
            err(
                format!("{path}.group_search.filter"),
                format!("{:?} is not a parenthesised LDAP filter", groups.filter),
            );
        }
        if groups.nested_depth > 5 {
            err(
                format!("{path}.group_search.nested_depth"),
                "must be at most 5".into(),
            );
        }
    }
    if ldap.entry_cache_seconds > 3600 {
        err(
            format!("{path}.entry_cache_seconds"),
            "must be at most 3600".into(),
        );
    }
    if ldap.pool_size == 0 || ldap.pool_size > 256 {
        err(
            format!("{path}.pool_size"),
            "must be between 1 and 256".into(),
        );
    }
    if ldap.timeout_seconds == 0 || ldap.timeout_seconds > 120 {
        err(
            format!("{path}.timeout_seconds"),
            "must be between 1 and 120".into(),
        );
    }
}

fn validate_static(dir: &StaticDirectoryConfig, path: &str, err: &mut impl FnMut(String, String)) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, user) in dir.users.iter().enumerate() {
        let upath = format!("{path}.users[{i}]");
        if let Some(problem) = username_problem(&user.username) {
            err(
                format!("{upath}.username"),
                format!("{:?} {problem}", user.username),
            );
        } else if let Some(first) = seen.insert(user.username.to_lowercase(), i) {
            err(
                format!("{upath}.username"),
                format!(
                    "duplicate user {:?} (first defined at users[{first}])",
                    user.username
                ),
            );
        }
        if let Some(problem) = argon2id_problem(&user.password_hash) {
            err(format!("{upath}.password_hash"), problem);
        }
        for (j, group) in user.groups.iter().enumerate() {
            if let Some(problem) = group_problem(group) {
                err(
                    format!("{upath}.groups[{j}]"),
                    format!("{group:?} {problem}"),
                );
            }
        }
    }
}

fn is_parenthesised(filter: &str) -> bool {
    filter.starts_with('(') && filter.ends_with(')') && parentheses_balance(filter)
}

fn parentheses_balance(filter: &str) -> bool {
    let mut depth: i64 = 0;
    for c in filter.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

/// Realm names appear in usernames (`jana@talsi`), group names (`talsi:staff`) and
/// Kubernetes object names, so they are DNS labels.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 63 {
        return Some("must be 1 to 63 characters long");
    }
    let valid = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid || name.starts_with('-') || name.ends_with('-') {
        return Some("must be lowercase letters, digits and inner hyphens (a DNS label)");
    }
    None
}

fn group_problem(group: &str) -> Option<&'static str> {
    if group.is_empty() || group.len() > 256 {
        return Some("must be 1 to 256 characters long");
    }
    if group.contains(':') {
        return Some("must not contain ':' (groups are qualified with the realm automatically)");
    }
    if group.chars().any(char::is_control) {
        return Some("must not contain control characters");
    }
    None
}

fn username_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 256 {
        return Some("must be 1 to 256 characters long");
    }
    if name.contains('@') || name.contains('\\') {
        return Some("must not contain '@' or '\\' (they separate user and realm)");
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some("must not contain spaces or control characters");
    }
    None
}

fn client_id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() || id.len() > 128 {
        return Some("must be 1 to 128 characters long");
    }
    let valid = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Some("may contain only ASCII letters, digits, '-', '_' and '.'");
    }
    None
}

/// OAuth 2.0 Security BCP: redirect URIs are absolute, have no fragment, and use https except
/// on loopback (native apps) or private-use schemes.
fn redirect_uri_problem(uri: &str, mode: Mode) -> Option<&'static str> {
    let Ok(url) = Url::parse(uri) else {
        return Some("is not an absolute URI");
    };
    if url.fragment().is_some() {
        return Some("must not contain a fragment");
    }
    match url.scheme() {
        "https" => None,
        "http" if is_loopback(&url) || mode == Mode::Dev => None,
        "http" => Some("must use https (plain http is allowed on loopback addresses only)"),
        scheme if scheme.contains('.') => None, // private-use scheme such as lv.talsi.app
        _ => Some("must use https, loopback http, or a private-use scheme like lv.example.app"),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Checks that a stored hash is a PHC string for argon2id; the value itself is not logged.
fn argon2id_problem(hash: &str) -> Option<String> {
    match argon2::PasswordHash::new(hash) {
        Ok(parsed) if parsed.algorithm.as_str() == "argon2id" => None,
        Ok(parsed) => Some(format!(
            "uses {}; only argon2id hashes are accepted",
            parsed.algorithm
        )),
        Err(_) => Some("is not a PHC-format argon2id hash (\"$argon2id$v=19$...\")".into()),
    }
}

fn check_readable(file: &Path, path: &str, errors: &mut Vec<ConfigError>) {
    if let Err(e) = std::fs::File::open(file) {
        errors.push(ConfigError::new(
            path,
            format!("cannot read {}: {e}", file.display()),
        ));
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
