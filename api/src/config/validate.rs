//! The checks of a parsed configuration: cross-field rules without I/O
//! ([`Config::validate`]) and whether every referenced file can be read
//! ([`Config::check_files`]).

use std::collections::HashMap;
use std::path::Path;

use url::Url;

use super::{Config, ConfigError, LdapConfig, Mode, StaticDirectoryConfig, redact_url};

impl Config {
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

        if self.server.header_read_timeout_seconds == 0 {
            err(
                "server.header_read_timeout_seconds".into(),
                "must be at least 1: without it a slow client holds a connection forever".into(),
            );
        }
        if self.server.authorization_requests_per_minute == 0 {
            err(
                "server.authorization_requests_per_minute".into(),
                "must be at least 1".into(),
            );
        }
        if self.server.max_connections == 0 {
            err("server.max_connections".into(), "must be at least 1".into());
        }
        if self.server.management_listen == Some(self.server.listen) {
            err(
                "server.management_listen".into(),
                "must differ from server.listen".into(),
            );
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
            for (j, client_id) in trust.clients.iter().enumerate() {
                let path = format!("{path}.clients[{j}]");
                match self.clients.iter().find(|c| &c.client_id == client_id) {
                    None => err(path, format!("unknown client id {client_id:?}")),
                    Some(client) if client.realm != trust.trusting => err(
                        path,
                        format!(
                            "client {client_id:?} belongs to realm {:?}, not to the trusting realm {:?}",
                            client.realm, trust.trusting
                        ),
                    ),
                    Some(_) => {}
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
        self.admin_api.validate(self, &mut err);
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

/// The largest argon2 parameters a configured hash may ask for: the memory and passes of
/// RFC 9106's second recommended option (64 MiB, 3 passes, 4 lanes) with one pass to spare.
/// Anyone can make the service run a verification (a wrong secret), so its cost is capped;
/// with at most twice-the-cores verifications at once (`api/src/federation/hash_work.rs`),
/// at most `2 × cores × 64 MiB` is ever in use for them.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 64 * 1024;
pub const MAX_ARGON2_TIME_COST: u32 = 4;
pub const MAX_ARGON2_PARALLELISM: u32 = 4;

/// Why the argon2 parameters of `hash` exceed the caps, if they do.
fn argon2_cost_problem(hash: &argon2::PasswordHash<'_>) -> Option<String> {
    let Ok(params) = argon2::Params::try_from(hash) else {
        return Some("has argon2 parameters that do not parse".into());
    };
    let (m, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
    (m > MAX_ARGON2_MEMORY_KIB || t > MAX_ARGON2_TIME_COST || p > MAX_ARGON2_PARALLELISM).then(
        || {
            format!(
                "asks for argon2 cost m={m},t={t},p={p}, above the cap \
                 m={MAX_ARGON2_MEMORY_KIB},t={MAX_ARGON2_TIME_COST},p={MAX_ARGON2_PARALLELISM} \
                 (anyone can make the service verify it)"
            )
        },
    )
}

/// Checks that a stored hash is a PHC string for argon2id; the value itself is not logged.
fn argon2id_problem(hash: &str) -> Option<String> {
    match argon2::PasswordHash::new(hash) {
        Ok(parsed) if parsed.algorithm.as_str() == "argon2id" => argon2_cost_problem(&parsed),
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
