//! Reading a realm's password policy for the security monitor: OpenLDAP ppolicy entries
//! (`objectClass: pwdPolicy`), on the service connection, bounded.
//!
//! Where: the configured `password_policy_dn` alone; otherwise every `pwdPolicy` entry in the
//! naming context holding `user_base` (the default policy and any that accounts name in
//! `pwdPolicySubentry` usually live there). The overlay's own `ppolicy_default` is server
//! configuration (`cn=config`), which a service account does not read.

use std::panic::AssertUnwindSafe;

use ldap3::{Scope, SearchEntry, SearchOptions};

use super::{LdapDirectory, OpError, Server, first, mark_down, mark_up};
use crate::federation::directory::{DirectoryFailure, PasswordPolicy};

/// Most policy entries read; a directory with more names the one to read instead.
const MAX_POLICIES: usize = 16;

/// The policy attributes read, never anything about a user.
const ATTRIBUTES: [&str; 6] = [
    "pwdMinLength",
    "pwdCheckQuality",
    "pwdLockout",
    "pwdMaxFailure",
    "pwdMaxAge",
    "pwdInHistory",
];

impl LdapDirectory {
    /// The password policies the directory states, from the first server that answers; the
    /// reason when it states none that the service account can read.
    pub async fn password_policies(&self) -> Result<Vec<PasswordPolicy>, String> {
        let mut last_error = String::from("no directory URL configured");
        for index in self.server_order() {
            let server = &self.servers[index];
            match self.password_policies_on(server).await {
                Ok(policies) => {
                    mark_up(server);
                    return Ok(policies);
                }
                Err(OpError::Answer(failure)) => {
                    mark_up(server);
                    return Err(match failure {
                        DirectoryFailure::Unavailable(reason) => reason,
                        other => other.to_string(),
                    });
                }
                Err(OpError::Transport(error)) => {
                    tracing::warn!(url = %server.url, %error, "reading the password policy failed");
                    mark_down(server).await;
                    last_error = format!("{}: {error}", server.url);
                }
            }
        }
        Err(last_error)
    }

    async fn password_policies_on(&self, server: &Server) -> Result<Vec<PasswordPolicy>, OpError> {
        let (base, scope) = match &self.password_policy_dn {
            Some(dn) => (dn.clone(), Scope::Base),
            None => (self.naming_context(server).await?, Scope::Subtree),
        };
        let ldap3::SearchResult(entries, result) = {
            let mut ldap = self.service_connection(server).await?;
            ldap.with_timeout(self.timeout)
                .with_search_options(SearchOptions::new().sizelimit(MAX_POLICIES as i32))
                .search(&base, scope, "(objectClass=pwdPolicy)", ATTRIBUTES.to_vec())
                .await?
        };
        let unavailable = |reason: String| OpError::Answer(DirectoryFailure::Unavailable(reason));
        match result.rc {
            0 => {}
            4 => {
                return Err(unavailable(format!(
                    "more than {MAX_POLICIES} password policies under {base}; \
                     set ldap.password_policy_dn to the one that applies"
                )));
            }
            32 => {
                return Err(unavailable(format!(
                    "the password policy entry {base} does not exist"
                )));
            }
            rc => {
                return Err(OpError::Transport(format!(
                    "password policy search under {base} failed with result code {rc}: {}",
                    result.text
                )));
            }
        }
        let mut policies = Vec::new();
        for raw in entries {
            // ldap3 panics on malformed BER from the server.
            let entry = std::panic::catch_unwind(AssertUnwindSafe(|| SearchEntry::construct(raw)))
                .map_err(|_| OpError::Transport("the directory sent a malformed entry".into()))?;
            if entry.dn.is_empty() {
                continue;
            }
            policies.push(policy_from_entry(&entry).map_err(unavailable)?);
        }
        if policies.is_empty() {
            return Err(unavailable(match &self.password_policy_dn {
                Some(dn) => format!(
                    "{dn} is not a password policy (objectClass pwdPolicy) the service account can read"
                ),
                None => format!(
                    "no password policy (objectClass pwdPolicy) the service account can read under {base}; \
                     grant it read access or set ldap.password_policy_dn"
                ),
            }));
        }
        Ok(policies)
    }

    /// The naming context (from the root DSE) that holds `user_base`; `user_base` itself when
    /// the root DSE names none that does.
    async fn naming_context(&self, server: &Server) -> Result<String, OpError> {
        let ldap3::SearchResult(entries, _) = {
            let mut ldap = self.service_connection(server).await?;
            ldap.with_timeout(self.timeout)
                .search("", Scope::Base, "(objectClass=*)", vec!["namingContexts"])
                .await?
        };
        let contexts: Vec<String> = match entries.into_iter().next() {
            Some(raw) => {
                let entry =
                    std::panic::catch_unwind(AssertUnwindSafe(|| SearchEntry::construct(raw)))
                        .map_err(|_| {
                            OpError::Transport("the directory sent a malformed entry".into())
                        })?;
                entry
                    .attrs
                    .into_iter()
                    .filter(|(key, _)| key.eq_ignore_ascii_case("namingContexts"))
                    .flat_map(|(_, values)| values)
                    .collect()
            }
            None => Vec::new(),
        };
        Ok(context_of(&self.user_base, &contexts))
    }
}

/// The longest naming context that `dn` lies in; `dn` itself when none does.
fn context_of(dn: &str, contexts: &[String]) -> String {
    let normalise = |dn: &str| {
        dn.split(',')
            .map(|rdn| rdn.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    let target = normalise(dn);
    contexts
        .iter()
        .filter(|context| {
            let context = normalise(context);
            !context.is_empty() && target.ends_with(&context)
        })
        .max_by_key(|context| context.len())
        .cloned()
        .unwrap_or_else(|| dn.to_owned())
}

/// A policy entry's limits; an attribute the entry lacks takes the draft's default (0, FALSE).
/// A value that is not what the draft allows is refused, never guessed.
fn policy_from_entry(entry: &SearchEntry) -> Result<PasswordPolicy, String> {
    let number = |name: &str| -> Result<u64, String> {
        match first(&entry.attrs, name) {
            None => Ok(0),
            Some(value) => value.trim().parse::<u64>().map_err(|_| {
                format!(
                    "{name} of the password policy {} is not a number: {value:?}",
                    entry.dn
                )
            }),
        }
    };
    let small = |name: &str| -> Result<u32, String> {
        u32::try_from(number(name)?)
            .map_err(|_| format!("{name} of the password policy {} is too large", entry.dn))
    };
    let check_quality = match number("pwdCheckQuality")? {
        quality @ 0..=2 => quality as u8,
        other => {
            return Err(format!(
                "pwdCheckQuality of the password policy {} is {other}, not 0, 1 or 2",
                entry.dn
            ));
        }
    };
    let lockout = match first(&entry.attrs, "pwdLockout") {
        None => false,
        Some(value) if value.eq_ignore_ascii_case("TRUE") => true,
        Some(value) if value.eq_ignore_ascii_case("FALSE") => false,
        Some(value) => {
            return Err(format!(
                "pwdLockout of the password policy {} is {value:?}, not TRUE or FALSE",
                entry.dn
            ));
        }
    };
    Ok(PasswordPolicy {
        dn: entry.dn.clone(),
        min_length: small("pwdMinLength")?,
        check_quality,
        lockout,
        max_failure: small("pwdMaxFailure")?,
        max_age_seconds: number("pwdMaxAge")?,
        in_history: small("pwdInHistory")?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn entry(attrs: &[(&str, &str)]) -> SearchEntry {
        SearchEntry {
            dn: "cn=default,ou=policies,dc=talsi,dc=lv".into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                .collect::<HashMap<_, _>>(),
            bin_attrs: HashMap::new(),
        }
    }

    #[test]
    fn a_policy_entry_read_as_written_with_the_drafts_defaults() {
        let policy = policy_from_entry(&entry(&[
            ("pwdMinLength", "12"),
            ("pwdCheckQuality", "2"),
            ("pwdLockout", "TRUE"),
            ("pwdMaxFailure", "5"),
            ("pwdMaxAge", "7776000"),
            ("pwdInHistory", "5"),
        ]))
        .expect("policy");
        assert_eq!(
            policy,
            PasswordPolicy {
                dn: "cn=default,ou=policies,dc=talsi,dc=lv".into(),
                min_length: 12,
                check_quality: 2,
                lockout: true,
                max_failure: 5,
                max_age_seconds: 7_776_000,
                in_history: 5,
            }
        );
        let empty = policy_from_entry(&entry(&[])).expect("policy");
        assert_eq!(empty.min_length, 0);
        assert!(!empty.lockout);
        assert_eq!(empty.max_age_seconds, 0);
    }

    #[test]
    fn values_outside_the_draft_are_refused() {
        for (name, value, says) in [
            ("pwdMinLength", "eight", "not a number"),
            ("pwdCheckQuality", "3", "not 0, 1 or 2"),
            ("pwdLockout", "yes", "not TRUE or FALSE"),
            ("pwdInHistory", "99999999999", "too large"),
            ("pwdMaxAge", "-1", "not a number"),
        ] {
            let error = policy_from_entry(&entry(&[(name, value)])).expect_err(name);
            assert!(error.contains(name) && error.contains(says), "{error}");
        }
    }

    #[test]
    fn the_naming_context_holding_the_user_base() {
        let contexts = ["dc=lv".to_owned(), "DC=talsi, DC=lv".to_owned()];
        assert_eq!(
            context_of("ou=people,dc=talsi,dc=lv", &contexts),
            "DC=talsi, DC=lv"
        );
        assert_eq!(
            context_of("ou=people,dc=example,dc=com", &contexts),
            "ou=people,dc=example,dc=com"
        );
        assert_eq!(context_of("ou=people,dc=riga,dc=lv", &contexts), "dc=lv");
    }
}
