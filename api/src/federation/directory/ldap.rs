//! A municipality's LDAP directory (OpenLDAP, Active Directory, FreeIPA, ...).
//!
//! Sign-in is search-then-bind: the service account finds the user's entry (the filter value
//! is escaped; a DN is never built from input), then a *separate* connection binds as that DN
//! with the user's password, so a user bind never changes the service connections' identity.
//! Several URLs are tried in order; a URL that fails is skipped for a growing back-off while
//! another answers, and retried first once its back-off is over.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ldap3::controls::RawControl;
use ldap3::{
    LdapConnAsync, LdapConnSettings, LdapError, ResultEntry, Scope, SearchEntry, SearchOptions,
};
use tokio::sync::Mutex;

pub mod filter;
mod listing;
mod password_policy;

use super::entry_cache::EntryCache;
use super::{DirectoryAnswer, DirectoryFailure, DirectoryUser};
use crate::config::{GroupSearchConfig, LdapAttributes, LdapConfig};

/// OID of the password policy request/response control (draft-behera-ldap-password-policy).
const PPOLICY_OID: &str = "1.3.6.1.4.1.42.2.27.8.5.1";
/// OpenLDAP ppolicy's marker of an account locked by an administrator until unlocked.
const ADMIN_LOCKED: &str = "000001010000Z";
/// Active Directory `userAccountControl` / `msDS-User-Account-Control-Computed` bits.
const UF_ACCOUNTDISABLE: u64 = 0x2;
const UF_LOCKOUT: u64 = 0x10;
const UF_PASSWORD_EXPIRED: u64 = 0x80_0000;
/// Most groups collected for one user, whatever the directory holds.
const MAX_GROUPS: usize = 1000;
/// Longest and shortest back-off of a failed server.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Multiplexed service connections per server (searches run concurrently on each).
const SERVICE_CONNECTIONS: usize = 2;

/// Why one operation against one server did not produce an answer about the user.
#[derive(Debug)]
enum OpError {
    /// The server could not be reached or did not answer: try the next one.
    Transport(String),
    /// The server answered; this is the answer.
    Answer(DirectoryFailure),
}

impl From<LdapError> for OpError {
    fn from(error: LdapError) -> Self {
        Self::Transport(error.to_string())
    }
}

/// Health of one directory URL.
#[derive(Debug, Default)]
struct Health {
    consecutive_failures: u32,
    retry_after: Option<Instant>,
}

struct Server {
    url: String,
    health: std::sync::Mutex<Health>,
    /// Connections bound as the service account, shared by concurrent searches.
    service: Vec<Mutex<Option<ldap3::Ldap>>>,
    next_service: AtomicUsize,
    /// Idle connections for user binds; each is used by one bind at a time.
    binders: Mutex<Vec<ldap3::Ldap>>,
}

/// The health of a directory URL, for readiness and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHealth {
    pub url: String,
    pub up: bool,
    pub consecutive_failures: u32,
}

/// One realm's LDAP directory.
pub struct LdapDirectory {
    servers: Vec<Server>,
    start_tls: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    bind_dn: Option<String>,
    bind_password: Option<String>,
    user_base: String,
    user_filter: String,
    attributes: LdapAttributes,
    disabled_filter: Option<String>,
    group_search: Option<GroupSearchConfig>,
    password_policy_dn: Option<String>,
    pool_size: usize,
    entry_cache: EntryCache,
}

/// What a search found about a user.
struct FoundUser {
    dn: String,
    entry: SearchEntry,
}

impl LdapDirectory {
    /// Builds the directory from its configuration. `bind_password` was resolved from its
    /// file or environment variable; `tls` carries the realm's CA when one is configured.
    pub fn new(
        config: &LdapConfig,
        bind_password: Option<String>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        let servers = config
            .urls
            .iter()
            .map(|url| Server {
                url: url.clone(),
                health: std::sync::Mutex::new(Health::default()),
                service: (0..SERVICE_CONNECTIONS).map(|_| Mutex::new(None)).collect(),
                next_service: AtomicUsize::new(0),
                binders: Mutex::new(Vec::new()),
            })
            .collect();
        Self {
            servers,
            start_tls: config.start_tls,
            tls,
            timeout: Duration::from_secs(config.timeout_seconds),
            bind_dn: config.bind_dn.clone(),
            bind_password,
            user_base: config.user_base.clone(),
            user_filter: config.user_filter.clone(),
            attributes: config.attributes.clone(),
            disabled_filter: config.disabled_filter.clone(),
            group_search: config.group_search.clone(),
            password_policy_dn: config.password_policy_dn.clone(),
            pool_size: config.pool_size,
            entry_cache: EntryCache::new(Duration::from_secs(config.entry_cache_seconds)),
        }
    }

    /// Health of every URL, in configuration order.
    pub fn health(&self) -> Vec<ServerHealth> {
        let now = Instant::now();
        self.servers
            .iter()
            .map(|s| {
                let health = lock_health(&s.health);
                ServerHealth {
                    url: s.url.clone(),
                    up: health.retry_after.is_none_or(|t| t <= now)
                        && health.consecutive_failures == 0,
                    consecutive_failures: health.consecutive_failures,
                }
            })
            .collect()
    }

    /// Checks every server (service bind and a root DSE read) and records its health, so that
    /// readiness and metrics show a dead server before a user trips over it.
    pub async fn probe(&self) {
        for server in &self.servers {
            match self.probe_server(server).await {
                Ok(()) => mark_up(server),
                Err(error) => {
                    tracing::warn!(url = %server.url, %error, "directory probe failed");
                    mark_down(server).await;
                }
            }
        }
    }

    async fn probe_server(&self, server: &Server) -> Result<(), String> {
        let mut ldap = self.service_connection(server).await.map_err(|e| match e {
            OpError::Transport(text) => text,
            OpError::Answer(failure) => failure.to_string(),
        })?;
        ldap.with_timeout(self.timeout)
            .search("", Scope::Base, "(objectClass=*)", vec!["1.1"])
            .await
            .and_then(|result| result.success())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Search-then-bind with the user's password.
    pub async fn authenticate(&self, username: &str, password: &str) -> DirectoryAnswer {
        // An empty password would make a simple bind "unauthenticated" and succeed (RFC 4513
        // 5.1.2): it must never reach the directory.
        if password.is_empty() {
            return DirectoryAnswer {
                result: Err(DirectoryFailure::BadCredentials),
                server: None,
            };
        }
        self.on_any_server(|server| self.authenticate_on(server, username, password))
            .await
    }

    /// Re-reads the user without a password: present, enabled, current groups.
    pub async fn lookup(&self, username: &str) -> DirectoryAnswer {
        self.on_any_server(|server| self.lookup_on(server, username))
            .await
    }

    /// Runs `op` on each server in order of preference until one answers.
    async fn on_any_server<'a, F, Fut>(&'a self, op: F) -> DirectoryAnswer
    where
        F: Fn(&'a Server) -> Fut,
        Fut: Future<Output = Result<DirectoryUser, OpError>>,
    {
        let mut last_error = String::from("no directory URL configured");
        let mut last_url = None;
        for index in self.server_order() {
            let server = &self.servers[index];
            match op(server).await {
                Ok(user) => {
                    mark_up(server);
                    return answer(Ok(user), server);
                }
                Err(OpError::Answer(failure)) => {
                    mark_up(server);
                    return answer(Err(failure), server);
                }
                Err(OpError::Transport(error)) => {
                    tracing::warn!(url = %server.url, %error, "directory server failed");
                    mark_down(server).await;
                    last_error = error;
                    last_url = Some(server.url.clone());
                }
            }
        }
        DirectoryAnswer {
            result: Err(DirectoryFailure::Unavailable(last_error)),
            server: last_url,
        }
    }

    /// Healthy servers in configuration order, then the others by when they may be retried,
    /// so a realm whose servers are all down is still tried (and recovers by itself).
    fn server_order(&self) -> Vec<usize> {
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        for (index, server) in self.servers.iter().enumerate() {
            match lock_health(&server.health).retry_after {
                Some(at) if at > now => waiting.push((at, index)),
                _ => ready.push(index),
            }
        }
        waiting.sort();
        ready.extend(waiting.into_iter().map(|(_, index)| index));
        ready
    }

    async fn authenticate_on(
        &self,
        server: &Server,
        username: &str,
        password: &str,
    ) -> Result<DirectoryUser, OpError> {
        if let Some(cached) = self.entry_cache.get(username) {
            // The directory still checks the password and the account's lock on every
            // sign-in; only the search (DN, attributes, groups) is skipped.
            match self.bind_as_user(server, &cached.dn, password).await {
                Ok(()) => return Ok(cached.user),
                Err(OpError::Transport(e)) => return Err(OpError::Transport(e)),
                Err(OpError::Answer(failure)) => {
                    self.entry_cache.forget(username);
                    // Find out why without a second bind against the same entry, which would
                    // count twice towards the directory's own lockout.
                    let found = self.find_user(server, username).await?;
                    if found.dn == cached.dn {
                        return Err(OpError::Answer(failure));
                    }
                    // The entry moved: the bind went to a DN that no longer exists.
                    self.bind_as_user(server, &found.dn, password).await?;
                    let dn = found.dn.clone();
                    let user = self.user_from_entry(server, found).await?;
                    self.entry_cache.put(username, &dn, &user);
                    return Ok(user);
                }
            }
        }
        let found = match self.find_user(server, username).await {
            Ok(found) => found,
            Err(OpError::Answer(failure)) => {
                // Bind anyway (to a DN that cannot exist) so that an unknown or disabled user
                // costs the same round trips as a wrong password.
                self.equalising_bind(server, password).await;
                return Err(OpError::Answer(failure));
            }
            Err(transport) => return Err(transport),
        };
        self.bind_as_user(server, &found.dn, password).await?;
        let dn = found.dn.clone();
        let user = self.user_from_entry(server, found).await?;
        self.entry_cache.put(username, &dn, &user);
        Ok(user)
    }

    async fn lookup_on(&self, server: &Server, username: &str) -> Result<DirectoryUser, OpError> {
        let found = match self.find_user(server, username).await {
            Ok(found) => found,
            Err(e) => {
                self.entry_cache.forget(username);
                return Err(e);
            }
        };
        let dn = found.dn.clone();
        let user = self.user_from_entry(server, found).await?;
        self.entry_cache.put(username, &dn, &user);
        Ok(user)
    }

    /// Finds exactly one enabled entry for `username` with the service account.
    async fn find_user(&self, server: &Server, username: &str) -> Result<FoundUser, OpError> {
        let filter = filter::user_filter(&self.user_filter, username);
        let attributes = self.user_attributes();
        let ldap3::SearchResult(entries, result) = {
            let mut ldap = self.service_connection(server).await?;
            ldap.with_timeout(self.timeout)
                .with_search_options(SearchOptions::new().sizelimit(2))
                .search(&self.user_base, Scope::Subtree, &filter, attributes)
                .await?
        };
        match result.rc {
            0 => {}
            // sizeLimitExceeded: more than one entry matches.
            4 => return Err(OpError::Answer(DirectoryFailure::AmbiguousUser)),
            // noSuchObject: user_base does not exist, a configuration problem of the realm.
            32 => {
                return Err(OpError::Answer(DirectoryFailure::Unavailable(format!(
                    "user_base {} does not exist",
                    self.user_base
                ))));
            }
            rc => {
                return Err(OpError::Transport(format!(
                    "user search failed with result code {rc}: {}",
                    result.text
                )));
            }
        }
        match entries.len() {
            0 => Err(OpError::Answer(DirectoryFailure::UnknownUser)),
            1 => {
                let entry = construct(entries)?;
                let found = FoundUser {
                    dn: entry.dn.clone(),
                    entry,
                };
                self.check_enabled(server, &found).await?;
                Ok(found)
            }
            _ => Err(OpError::Answer(DirectoryFailure::AmbiguousUser)),
        }
    }

    fn user_attributes(&self) -> Vec<String> {
        let a = &self.attributes;
        let mut attrs = vec![
            a.id.clone(),
            a.username.clone(),
            a.email.clone(),
            a.name.clone(),
            a.groups.clone(),
            // Account state: OpenLDAP ppolicy and Active Directory.
            "pwdAccountLockedTime".to_owned(),
            "userAccountControl".to_owned(),
            "msDS-User-Account-Control-Computed".to_owned(),
        ];
        attrs.dedup();
        attrs
    }

    /// Account state the entry itself shows, and the configured disabled filter.
    async fn check_enabled(&self, server: &Server, found: &FoundUser) -> Result<(), OpError> {
        let attrs = &found.entry.attrs;
        if first(attrs, "pwdAccountLockedTime").is_some_and(|v| v == ADMIN_LOCKED) {
            return Err(OpError::Answer(DirectoryFailure::AccountDisabled(
                "locked by an administrator (pwdAccountLockedTime)".into(),
            )));
        }
        let flags = |name: &str| {
            first(attrs, name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if flags("userAccountControl") & UF_ACCOUNTDISABLE != 0 {
            return Err(OpError::Answer(DirectoryFailure::AccountDisabled(
                "userAccountControl ACCOUNTDISABLE".into(),
            )));
        }
        let computed = flags("msDS-User-Account-Control-Computed");
        if computed & UF_LOCKOUT != 0 {
            return Err(OpError::Answer(DirectoryFailure::LockedOut));
        }
        if computed & UF_PASSWORD_EXPIRED != 0 {
            return Err(OpError::Answer(DirectoryFailure::AccountDisabled(
                "password expired".into(),
            )));
        }
        if let Some(filter) = &self.disabled_filter {
            let mut ldap = self.service_connection(server).await?;
            let (matches, _) = ldap
                .with_timeout(self.timeout)
                .search(&found.dn, Scope::Base, filter, vec!["1.1"])
                .await?
                .success()
                .map_err(|e| OpError::Transport(e.to_string()))?;
            if !matches.is_empty() {
                return Err(OpError::Answer(DirectoryFailure::AccountDisabled(
                    "matches disabled_filter".into(),
                )));
            }
        }
        Ok(())
    }

    /// Binds as the user on a bind-only connection, asking for the password policy control.
    async fn bind_as_user(&self, server: &Server, dn: &str, password: &str) -> Result<(), OpError> {
        let mut ldap = self.bind_connection(server).await?;
        let result = ldap
            .with_timeout(self.timeout)
            .with_controls(RawControl {
                ctype: PPOLICY_OID.to_owned(),
                crit: false,
                val: None,
            })
            .simple_bind(dn, password)
            .await;
        let result = match result {
            Ok(result) => result,
            Err(e) => return Err(OpError::Transport(e.to_string())),
        };
        // The connection answered, whatever it said: keep it for the next bind.
        self.return_bind_connection(server, ldap).await;
        let policy_error = result
            .ctrls
            .iter()
            .find(|c| c.1.ctype == PPOLICY_OID)
            .and_then(|c| c.1.val.as_deref())
            .and_then(ppolicy_error);
        match (result.rc, policy_error) {
            (0, None) => Ok(()),
            (0, Some(PolicyError::ChangeAfterReset)) => Err(OpError::Answer(
                DirectoryFailure::AccountDisabled("password must be changed after a reset".into()),
            )),
            (0, Some(_)) => Ok(()),
            (49, Some(PolicyError::AccountLocked)) => {
                Err(OpError::Answer(DirectoryFailure::LockedOut))
            }
            (49, Some(PolicyError::PasswordExpired)) => Err(OpError::Answer(
                DirectoryFailure::AccountDisabled("password expired".into()),
            )),
            (49, _) => Err(OpError::Answer(active_directory_failure(&result.text))),
            // busy, unavailable: the server cannot answer now.
            (51 | 52, _) => Err(OpError::Transport(format!(
                "bind refused with result code {}: {}",
                result.rc, result.text
            ))),
            (rc, _) => Err(OpError::Answer(DirectoryFailure::AccountDisabled(format!(
                "bind refused with result code {rc}: {}",
                result.text
            )))),
        }
    }

    /// A bind that cannot succeed, for timing only; its outcome is ignored.
    async fn equalising_bind(&self, server: &Server, password: &str) {
        let dn = format!("cn=novads-no-such-entry,{}", self.user_base);
        let _ = self.bind_as_user(server, &dn, password).await;
    }

    async fn user_from_entry(
        &self,
        server: &Server,
        found: FoundUser,
    ) -> Result<DirectoryUser, OpError> {
        let a = &self.attributes;
        let attrs = &found.entry.attrs;
        let id = first(attrs, &a.id).map(str::to_owned).or_else(|| {
            found
                .entry
                .bin_attrs
                .get(&a.id)
                .and_then(|v| v.first())
                .map(|bytes| hex(bytes))
        });
        let Some(id) = id else {
            // Without an immutable id there is no stable subject: a configuration problem of
            // the realm, not the user's fault.
            return Err(OpError::Answer(DirectoryFailure::Unavailable(format!(
                "entry {} has no {} attribute",
                found.dn, a.id
            ))));
        };
        let mut groups: Vec<String> = attrs
            .get(&a.groups)
            .map(|values| values.iter().map(|v| group_name(v)).collect())
            .unwrap_or_default();
        if let Some(search) = &self.group_search {
            groups.extend(self.search_groups(server, search, &found).await?);
        }
        groups.sort();
        groups.dedup();
        groups.truncate(MAX_GROUPS);
        Ok(DirectoryUser {
            id,
            username: first(attrs, &a.username).unwrap_or_default().to_owned(),
            email: first(attrs, &a.email).map(str::to_owned),
            name: first(attrs, &a.name).map(str::to_owned),
            groups,
        })
    }

    /// Groups that list the user (and, to `nested_depth`, groups that list those groups).
    async fn search_groups(
        &self,
        server: &Server,
        search: &GroupSearchConfig,
        found: &FoundUser,
    ) -> Result<Vec<String>, OpError> {
        let username = first(&found.entry.attrs, &self.attributes.username).unwrap_or_default();
        let mut names = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut members = vec![found.dn.clone()];
        for _level in 0..=search.nested_depth {
            let mut next = Vec::new();
            for member in &members {
                let filter = filter::group_filter(&search.filter, member, username);
                let mut ldap = self.service_connection(server).await?;
                let (entries, _) = ldap
                    .with_timeout(self.timeout)
                    .search(
                        &search.base,
                        Scope::Subtree,
                        &filter,
                        vec![search.name_attribute.as_str()],
                    )
                    .await?
                    .success()
                    .map_err(|e| OpError::Transport(e.to_string()))?;
                for raw in entries {
                    let entry = construct(vec![raw])?;
                    if !seen.insert(entry.dn.clone()) || seen.len() > MAX_GROUPS {
                        continue;
                    }
                    if let Some(name) = first(&entry.attrs, &search.name_attribute) {
                        names.push(name.to_owned());
                    }
                    next.push(entry.dn);
                }
            }
            if next.is_empty() {
                break;
            }
            members = next;
        }
        Ok(names)
    }

    async fn connect(&self, server: &Server) -> Result<ldap3::Ldap, OpError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout)
            .set_starttls(self.start_tls && server.url.starts_with("ldap://"));
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &server.url).await?;
        let url = server.url.clone();
        tokio::spawn(async move {
            if let Err(error) = conn.drive().await {
                tracing::debug!(%url, %error, "directory connection closed");
            }
        });
        Ok(ldap)
    }

    /// A connection bound as the service account (or anonymous when none is configured).
    async fn service_connection(&self, server: &Server) -> Result<ldap3::Ldap, OpError> {
        let slot = server.next_service.fetch_add(1, Ordering::Relaxed) % server.service.len();
        let mut guard = server.service[slot].lock().await;
        if let Some(ldap) = guard.as_mut()
            && !ldap.is_closed()
        {
            return Ok(ldap.clone());
        }
        let mut ldap = self.connect(server).await?;
        if let (Some(dn), Some(password)) = (&self.bind_dn, &self.bind_password) {
            let result = ldap
                .with_timeout(self.timeout)
                .simple_bind(dn, password)
                .await?;
            if result.rc != 0 {
                // Every server will refuse the same account; the realm is unusable until the
                // configuration is fixed.
                return Err(OpError::Transport(format!(
                    "service account bind refused with result code {}: {}",
                    result.rc, result.text
                )));
            }
        }
        *guard = Some(ldap.clone());
        Ok(ldap)
    }

    async fn bind_connection(&self, server: &Server) -> Result<ldap3::Ldap, OpError> {
        loop {
            let idle = server.binders.lock().await.pop();
            match idle {
                Some(mut ldap) => {
                    if !ldap.is_closed() {
                        return Ok(ldap);
                    }
                }
                None => return self.connect(server).await,
            }
        }
    }

    async fn return_bind_connection(&self, server: &Server, ldap: ldap3::Ldap) {
        let mut idle = server.binders.lock().await;
        if idle.len() < self.pool_size {
            idle.push(ldap);
        }
    }
}

fn answer(result: Result<DirectoryUser, DirectoryFailure>, server: &Server) -> DirectoryAnswer {
    DirectoryAnswer {
        result,
        server: Some(server.url.clone()),
    }
}

fn lock_health(health: &std::sync::Mutex<Health>) -> std::sync::MutexGuard<'_, Health> {
    // Health is plain data; a panic elsewhere cannot leave it inconsistent.
    health
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn mark_up(server: &Server) {
    let mut health = lock_health(&server.health);
    health.consecutive_failures = 0;
    health.retry_after = None;
}

async fn mark_down(server: &Server) {
    {
        let mut health = lock_health(&server.health);
        health.consecutive_failures = health.consecutive_failures.saturating_add(1);
        let backoff = MIN_BACKOFF
            .saturating_mul(1 << (health.consecutive_failures - 1).min(5))
            .min(MAX_BACKOFF);
        health.retry_after = Some(Instant::now() + backoff);
    }
    // Connections to a failed server are not reused.
    for slot in &server.service {
        *slot.lock().await = None;
    }
    server.binders.lock().await.clear();
}

/// Parses the single entry of a search. ldap3 panics on malformed BER from the server; a
/// broken directory must not take a sign-in request down with it.
fn construct(mut entries: Vec<ResultEntry>) -> Result<SearchEntry, OpError> {
    let Some(raw) = entries.pop() else {
        return Err(OpError::Answer(DirectoryFailure::UnknownUser));
    };
    std::panic::catch_unwind(AssertUnwindSafe(|| SearchEntry::construct(raw)))
        .map_err(|_| OpError::Transport("the directory sent a malformed entry".into()))
}

fn first<'a>(
    attrs: &'a std::collections::HashMap<String, Vec<String>>,
    name: &str,
) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .and_then(|(_, values)| values.first())
        .map(String::as_str)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `cn=it-admins,ou=groups,dc=talsi,dc=lv` -> `it-admins`; a value that is not a DN is kept.
pub fn group_name(value: &str) -> String {
    let Some((_, rest)) = value.split_once('=') else {
        return value.to_owned();
    };
    let mut name = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                // `\,` escapes one character; `\2C` is a hex-encoded byte.
                let Some(next) = chars.next() else { break };
                if next.is_ascii_hexdigit() {
                    let mut hex = String::from(next);
                    if let Some(second) = chars.next() {
                        hex.push(second);
                    }
                    match u8::from_str_radix(&hex, 16) {
                        Ok(byte) if byte.is_ascii() => name.push(char::from(byte)),
                        _ => name.push_str(&hex),
                    }
                } else {
                    name.push(next);
                }
            }
            ',' | '+' => break,
            c => name.push(c),
        }
    }
    name.trim().to_owned()
}

/// The `error` of a password policy response control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PolicyError {
    PasswordExpired,
    AccountLocked,
    ChangeAfterReset,
    Other(u8),
}

/// Reads `PasswordPolicyResponseValue ::= SEQUENCE { warning [0] ... OPTIONAL,
/// error [1] ENUMERATED OPTIONAL }`. Malformed input yields `None`.
fn ppolicy_error(value: &[u8]) -> Option<PolicyError> {
    let (tag, body, _) = read_tlv(value)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = body;
    while !rest.is_empty() {
        let (tag, content, remaining) = read_tlv(rest)?;
        if tag == 0x81 {
            return Some(match content.last()? {
                0 => PolicyError::PasswordExpired,
                1 => PolicyError::AccountLocked,
                2 => PolicyError::ChangeAfterReset,
                other => PolicyError::Other(*other),
            });
        }
        rest = remaining;
    }
    None
}

/// One BER tag-length-value: (tag, content, rest). Definite lengths up to 4 bytes.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first_len, rest) = rest.split_first()?;
    let (len, rest) = if first_len < 0x80 {
        (usize::from(first_len), rest)
    } else {
        let count = usize::from(first_len & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Active Directory explains a failed bind with a sub-code in the diagnostic text
/// (`... data 52e, v4563`). Anything else is a wrong password.
fn active_directory_failure(text: &str) -> DirectoryFailure {
    let code = text
        .split("data ")
        .nth(1)
        .and_then(|rest| rest.split([',', ' ']).next())
        .unwrap_or("");
    match code.to_ascii_lowercase().as_str() {
        "525" => DirectoryFailure::UnknownUser,
        "530" => DirectoryFailure::AccountDisabled("not permitted to sign in at this time".into()),
        "531" => DirectoryFailure::AccountDisabled("not permitted at this workstation".into()),
        "532" => DirectoryFailure::AccountDisabled("password expired".into()),
        "533" => DirectoryFailure::AccountDisabled("account disabled".into()),
        "701" => DirectoryFailure::AccountDisabled("account expired".into()),
        "773" => DirectoryFailure::AccountDisabled("password must be reset".into()),
        "775" => DirectoryFailure::LockedOut,
        _ => DirectoryFailure::BadCredentials,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_from_dns() {
        assert_eq!(
            group_name("cn=it-admins,ou=groups,dc=talsi,dc=lv"),
            "it-admins"
        );
        assert_eq!(group_name("CN=Domain Users,CN=Users,DC=x"), "Domain Users");
        assert_eq!(group_name("cn=R\\, D,ou=g"), "R, D");
        assert_eq!(group_name("cn=a\\2Cb,ou=g"), "a,b");
        assert_eq!(group_name("plain-name"), "plain-name");
    }

    #[test]
    fn ppolicy_response_values() {
        // SEQUENCE { error [1] accountLocked }
        assert_eq!(
            ppolicy_error(&[0x30, 0x03, 0x81, 0x01, 0x01]),
            Some(PolicyError::AccountLocked)
        );
        // SEQUENCE { warning [0] { graceAuthNsRemaining [1] 2 }, error [1] passwordExpired }
        assert_eq!(
            ppolicy_error(&[0x30, 0x08, 0xa0, 0x03, 0x81, 0x01, 0x02, 0x81, 0x01, 0x00]),
            Some(PolicyError::PasswordExpired)
        );
        // Only a warning.
        assert_eq!(
            ppolicy_error(&[0x30, 0x05, 0xa0, 0x03, 0x80, 0x01, 0x10]),
            None
        );
        // Garbage and truncation never panic.
        assert_eq!(ppolicy_error(&[]), None);
        assert_eq!(ppolicy_error(&[0x30, 0x7f, 0x81]), None);
        assert_eq!(ppolicy_error(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(ppolicy_error(&[0x04, 0x00]), None);
    }

    #[test]
    fn active_directory_sub_codes() {
        let text = |code: &str| {
            format!(
                "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data {code}, v4563"
            )
        };
        assert_eq!(
            active_directory_failure(&text("52e")),
            DirectoryFailure::BadCredentials
        );
        assert_eq!(
            active_directory_failure(&text("775")),
            DirectoryFailure::LockedOut
        );
        assert!(matches!(
            active_directory_failure(&text("533")),
            DirectoryFailure::AccountDisabled(_)
        ));
        assert!(matches!(
            active_directory_failure(&text("532")),
            DirectoryFailure::AccountDisabled(_)
        ));
        assert!(matches!(
            active_directory_failure(&text("701")),
            DirectoryFailure::AccountDisabled(_)
        ));
        assert!(matches!(
            active_directory_failure(&text("773")),
            DirectoryFailure::AccountDisabled(_)
        ));
        assert_eq!(
            active_directory_failure(&text("525")),
            DirectoryFailure::UnknownUser
        );
        assert_eq!(
            active_directory_failure("Invalid credentials"),
            DirectoryFailure::BadCredentials
        );
    }
}
