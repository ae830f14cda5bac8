//! `admin_api`: who may use the admin API at `/api/v1` (docs/admin-api.md).
//!
//! The admin API accepts only access tokens this provider issued to one of `clients`; what a
//! token may do follows from the roles its groups (or, for a service, its client) earn here
//! and in the Municipalities of the cluster.

use std::collections::HashSet;

use serde::Deserialize;
use url::Url;

use super::Config;

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminApiConfig {
    /// Client ids whose access tokens the admin API accepts (the token's audience). Empty
    /// (the default) turns every token away: the API is closed until someone opens it.
    pub clients: Vec<String>,
    /// Realm-qualified groups (`realm:group`) whose members are platform administrators.
    pub platform_admin_groups: Vec<String>,
    /// Realm-qualified groups whose members are auditors: they read everything and change
    /// nothing.
    pub auditor_groups: Vec<String>,
    /// Confidential clients that call the API for themselves (`client_credentials`), and the
    /// platform role each one holds.
    pub service_clients: Vec<ServiceClientConfig>,
    /// Browser origins (`https://portal.example.lv`) allowed to call the API across origins.
    /// Empty (the default): no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// How many requests each caller (token subject) may make.
    pub rate_limit: AdminRateLimitConfig,
}

/// The admin API's per-caller rate limit.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminRateLimitConfig {
    /// Requests a caller may make per minute, sustained (default 600). `0` turns the limit
    /// off.
    pub requests_per_minute: u32,
    /// Requests a caller may make at once before the rate applies (default 60).
    pub burst: u32,
}

impl Default for AdminRateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_minute: 600,
            burst: 60,
        }
    }
}

/// A service acting with a `client_credentials` token.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServiceClientConfig {
    pub client_id: String,
    pub role: PlatformRole,
}

/// The roles that hold across every municipality.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PlatformRole {
    PlatformAdmin,
    Auditor,
}

impl AdminApiConfig {
    /// Cross-field rules against the rest of the configuration; pure.
    pub(super) fn validate(&self, config: &Config, err: &mut impl FnMut(String, String)) {
        let mut seen = HashSet::new();
        for (i, client_id) in self.clients.iter().enumerate() {
            let path = format!("admin_api.clients[{i}]");
            if config.clients.iter().all(|c| &c.client_id != client_id) {
                err(path, format!("unknown client {client_id:?}"));
            } else if !seen.insert(client_id.as_str()) {
                err(path, format!("duplicate client {client_id:?}"));
            }
        }
        for (key, groups) in [
            ("platform_admin_groups", &self.platform_admin_groups),
            ("auditor_groups", &self.auditor_groups),
        ] {
            for (i, group) in groups.iter().enumerate() {
                let path = format!("admin_api.{key}[{i}]");
                match group.split_once(':') {
                    Some((realm, name)) if !name.is_empty() && !name.contains(':') => {
                        if config.realm(realm).is_none() {
                            err(path, format!("unknown realm {realm:?} in {group:?}"));
                        }
                    }
                    _ => err(
                        path,
                        format!(
                            "{group:?} must be qualified with its realm, like `talsi:it-admins`"
                        ),
                    ),
                }
            }
        }
        let mut services = HashSet::new();
        for (i, service) in self.service_clients.iter().enumerate() {
            let path = format!("admin_api.service_clients[{i}].client_id");
            let id = &service.client_id;
            match config.clients.iter().find(|c| &c.client_id == id) {
                None => err(path, format!("unknown client {id:?}")),
                Some(client) if client.public => err(
                    path,
                    format!(
                        "{id:?} is a public client; client_credentials needs a confidential one"
                    ),
                ),
                Some(_) if !self.clients.contains(id) => err(
                    path,
                    format!("{id:?} must also be listed in admin_api.clients"),
                ),
                Some(_) if !services.insert(id.as_str()) => {
                    err(path, format!("duplicate service client {id:?}"))
                }
                Some(_) => {}
            }
        }
        if self.rate_limit.requests_per_minute > 0 && self.rate_limit.burst == 0 {
            err(
                "admin_api.rate_limit.burst".to_owned(),
                "must be at least 1 while requests_per_minute is set".to_owned(),
            );
        }
        for (i, origin) in self.cors_origins.iter().enumerate() {
            if let Some(problem) = origin_problem(origin) {
                err(
                    format!("admin_api.cors_origins[{i}]"),
                    format!("{origin:?} {problem}"),
                );
            }
        }
    }
}

/// An origin is a scheme, a host and an optional port: nothing else, since browsers compare it
/// as text with their `Origin` header.
fn origin_problem(origin: &str) -> Option<&'static str> {
    let Ok(url) = Url::parse(origin) else {
        return Some("is not a URL");
    };
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Some("must be an http(s) origin like https://portal.example.lv");
    }
    if url.origin().ascii_serialization() != origin {
        return Some("must be an origin alone: scheme, host and port, no path or trailing slash");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    fn config(admin_api: &str) -> Result<Config, ConfigError> {
        super::super::parse(&format!(
            "server: {{listen: '127.0.0.1:8080', issuer: 'https://sso.example.lv', \
             key_encryption_key_file: /k}}\n\
             database: sqlite:///tmp/x.db\n\
             realms: [{{name: talsi, static: {{users: []}}}}]\n\
             clients:\n\
             - {{client_id: portal, realm: talsi, redirect_uris: ['https://p.example.lv/cb'], public: true}}\n\
             - {{client_id: robot, realm: talsi, redirect_uris: ['https://r.example.lv/cb'], \
                 secret_hash: 'x'}}\n\
             admin_api: {admin_api}\n"
        ))
    }

    fn problems(admin_api: &str) -> Vec<String> {
        let config = config(admin_api).expect("parses");
        let mut found = Vec::new();
        config.admin_api.validate(&config, &mut |path, message| {
            found.push(format!("{path}: {message}"))
        });
        found
    }

    #[test]
    fn a_valid_section_has_no_problems() {
        assert_eq!(
            problems(
                "{clients: [portal, robot], platform_admin_groups: ['talsi:it-admins'], \
                 auditor_groups: ['talsi:audit'], \
                 service_clients: [{client_id: robot, role: auditor}], \
                 cors_origins: ['https://portal.example.lv', 'http://localhost:3000'], \
                 rate_limit: {requests_per_minute: 120, burst: 20}}"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_mistake_is_named_by_its_path() {
        let found = problems(
            "{clients: [portal, nobody, portal], platform_admin_groups: [it-admins, 'riga:x'], \
             service_clients: [{client_id: portal, role: platform-admin}, \
             {client_id: robot, role: auditor}], \
             cors_origins: ['https://portal.example.lv/', 'ftp://x'], \
             rate_limit: {burst: 0}}",
        );
        let expected = [
            "admin_api.clients[1]: unknown client \"nobody\"",
            "admin_api.clients[2]: duplicate client \"portal\"",
            "admin_api.platform_admin_groups[0]: \"it-admins\" must be qualified",
            "admin_api.platform_admin_groups[1]: unknown realm \"riga\"",
            "admin_api.service_clients[0].client_id: \"portal\" is a public client",
            "admin_api.service_clients[1].client_id: \"robot\" must also be listed",
            "admin_api.rate_limit.burst: must be at least 1",
            "admin_api.cors_origins[0]: \"https://portal.example.lv/\" must be an origin alone",
            "admin_api.cors_origins[1]: \"ftp://x\" must be an http(s) origin",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (found, expected) in found.iter().zip(expected) {
            assert!(found.starts_with(expected), "{found} vs {expected}");
        }
    }

    #[test]
    fn unknown_roles_and_keys_are_refused_when_parsing() {
        let error = config("{service_clients: [{client_id: robot, role: root}]}").unwrap_err();
        assert_eq!(error.path, "admin_api.service_clients[0].role");
        let error = config("{cors: []}").unwrap_err();
        assert!(error.message.contains("unknown key"), "{error}");
    }
}
