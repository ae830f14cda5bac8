//! Directories: where a realm's users and passwords live.
//!
//! Every realm has one: an LDAP directory of the municipality ([`ldap`]) or an embedded list of
//! users ([`static_users`]). Both answer the same two questions through [`Directory`]: "is this
//! the user's password?" (sign-in) and "does this user still exist, and in which groups?"
//! (token refresh), with a failure that says exactly why for the audit trail.

mod entry_cache;
pub mod ldap;
pub mod static_users;

use crate::federation::audit::AuditReason;

/// A user as their directory describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// Stable, immutable identifier (e.g. `entryUUID`); never the username.
    pub id: String,
    /// The username as the directory spells it.
    pub username: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// Group names of the user's own realm, unqualified.
    pub groups: Vec<String>,
}

/// An account as a directory listing shows it, for the security monitor: identifiers and
/// state only, never a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryAccount {
    /// Stable identifier (the entry's id attribute, or its DN when it has none).
    pub id: String,
    /// The username, lowercased as sign-in normalises it.
    pub username: String,
    /// Group names of the realm, unqualified.
    pub groups: Vec<String>,
    /// Neither disabled nor locked by an administrator.
    pub enabled: bool,
    /// The entry names a person (`givenName` or `sn`); shared and technical accounts often
    /// do not.
    pub person: bool,
    /// When the entry was created, when the directory says.
    pub created: Option<chrono::DateTime<chrono::Utc>>,
}

/// The accounts of a directory, at most as many as asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountListing {
    pub accounts: Vec<DirectoryAccount>,
    /// The directory holds more accounts than were listed.
    pub truncated: bool,
}

/// A password policy as the directory states it (OpenLDAP ppolicy, draft-behera-ldap-password-
/// policy), for the security monitor: the policy's limits, read as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Where it was read: the policy entry's DN.
    pub dn: String,
    /// `pwdMinLength`; enforced only when quality is checked.
    pub min_length: u32,
    /// `pwdCheckQuality`: 0 no quality checks, 1 check when the server can, 2 always.
    pub check_quality: u8,
    /// `pwdLockout`: failed binds lock the account.
    pub lockout: bool,
    /// `pwdMaxFailure`: consecutive failed binds before the lock; 0 means no limit.
    pub max_failure: u32,
    /// `pwdMaxAge` in seconds; 0 means passwords never expire.
    pub max_age_seconds: u64,
    /// `pwdInHistory`: earlier passwords a new one may not repeat.
    pub in_history: u32,
}

/// Why a directory did not vouch for a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryFailure {
    #[error("no such user")]
    UnknownUser,
    #[error("more than one entry matches the username")]
    AmbiguousUser,
    #[error("wrong password")]
    BadCredentials,
    #[error("the account is disabled: {0}")]
    AccountDisabled(String),
    #[error("the directory has locked the account")]
    LockedOut,
    #[error("the directory is unavailable: {0}")]
    Unavailable(String),
}

impl DirectoryFailure {
    /// The audit reason this failure is recorded with.
    pub fn audit_reason(&self) -> AuditReason {
        match self {
            Self::UnknownUser | Self::AmbiguousUser => AuditReason::UnknownUser,
            Self::BadCredentials => AuditReason::BadCredentials,
            Self::AccountDisabled(_) => AuditReason::AccountDisabled,
            Self::LockedOut => AuditReason::LockedOut,
            Self::Unavailable(_) => AuditReason::DirectoryUnavailable,
        }
    }

    /// Whether this failure is the user's own mistake (and so counts towards a lockout).
    /// Directory outages never do.
    pub fn counts_against_user(&self) -> bool {
        matches!(
            self,
            Self::UnknownUser | Self::AmbiguousUser | Self::BadCredentials
        )
    }
}

/// What a directory answered, and which server answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryAnswer {
    pub result: Result<DirectoryUser, DirectoryFailure>,
    /// The directory URL that answered or failed last; `None` for embedded directories.
    pub server: Option<String>,
}

/// A realm's directory.
pub enum Directory {
    Static(static_users::StaticDirectory),
    Ldap(Box<ldap::LdapDirectory>),
}

impl Directory {
    /// Checks `password` for `username` (already normalised, without realm).
    pub async fn authenticate(&self, username: &str, password: &str) -> DirectoryAnswer {
        match self {
            Self::Static(dir) => dir.authenticate(username, password).await,
            Self::Ldap(dir) => dir.authenticate(username, password).await,
        }
    }

    /// Health of each directory server (empty for embedded directories).
    pub fn health(&self) -> Vec<ldap::ServerHealth> {
        match self {
            Self::Static(_) => Vec::new(),
            Self::Ldap(dir) => dir.health(),
        }
    }

    /// Probes the directory's servers and updates their health (no-op for embedded ones).
    pub async fn probe(&self) {
        if let Self::Ldap(dir) = self {
            dir.probe().await;
        }
    }

    /// Lists up to `limit` accounts with their groups and state, for the security monitor.
    /// A directory that cannot be listed gives its reason.
    pub async fn accounts(&self, limit: usize) -> Result<AccountListing, String> {
        match self {
            Self::Static(dir) => Ok(dir.accounts(limit)),
            Self::Ldap(dir) => dir.accounts(limit).await,
        }
    }

    /// The password policies an LDAP directory states, for the security monitor; the reason
    /// when it states none that novads can read. An embedded directory has no policy of its
    /// own (novads checks its passwords): `None`.
    pub async fn password_policies(&self) -> Option<Result<Vec<PasswordPolicy>, String>> {
        match self {
            Self::Static(_) => None,
            Self::Ldap(dir) => Some(dir.password_policies().await),
        }
    }

    /// Looks the user up again without a password (token refresh): still there, still enabled,
    /// current groups.
    pub async fn lookup(&self, username: &str) -> DirectoryAnswer {
        match self {
            Self::Static(dir) => dir.lookup(username),
            Self::Ldap(dir) => dir.lookup(username).await,
        }
    }
}
