//! Listing a realm's accounts for the security monitor: paged searches (RFC 2696) on the
//! service connection, bounded by a number of entries, that read identifiers, groups and
//! account state, never passwords.
//!
//! Accounts are the entries sign-in would find: the realm's `user_filter` with `{username}`
//! as `*` (a presence or substring filter) under `user_base`. Groups come from the user entry
//! (`attributes.groups`, e.g. `memberOf`) and, with `group_search`, from the group entries
//! under its base that list the account (`member`, `uniqueMember` or `memberUid`), following
//! groups in groups to `nested_depth` as sign-in does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;

use chrono::{DateTime, NaiveDateTime, Utc};
use ldap3::adapters::PagedResults;
use ldap3::{Scope, SearchEntry};

use super::{
    ADMIN_LOCKED, LdapDirectory, OpError, Server, UF_ACCOUNTDISABLE, first, group_name, hex,
    mark_down, mark_up,
};
use crate::config::GroupSearchConfig;
use crate::federation::directory::{AccountListing, DirectoryAccount};

/// Entries asked for per page.
const PAGE_SIZE: usize = 500;
/// Most group entries read for `group_search`, whatever the directory holds.
const MAX_GROUP_ENTRIES: usize = 10_000;

/// Entries of one bounded search, and whether the directory held more.
struct Page {
    entries: Vec<SearchEntry>,
    truncated: bool,
}

impl LdapDirectory {
    /// Up to `limit` accounts, from the first server that answers; the reason of the last
    /// failure when none does.
    pub async fn accounts(&self, limit: usize) -> Result<AccountListing, String> {
        let mut last_error = String::from("no directory URL configured");
        for index in self.server_order() {
            let server = &self.servers[index];
            match self.accounts_on(server, limit).await {
                Ok(listing) => {
                    mark_up(server);
                    return Ok(listing);
                }
                Err(OpError::Answer(failure)) => {
                    mark_up(server);
                    return Err(format!("{}: {failure}", server.url));
                }
                Err(OpError::Transport(error)) => {
                    tracing::warn!(url = %server.url, %error, "directory listing failed");
                    mark_down(server).await;
                    last_error = format!("{}: {error}", server.url);
                }
            }
        }
        Err(last_error)
    }

    async fn accounts_on(&self, server: &Server, limit: usize) -> Result<AccountListing, OpError> {
        let filter = self.user_filter.replace("{username}", "*");
        let mut attributes = self.user_attributes();
        attributes.extend(["givenName", "sn", "createTimestamp", "whenCreated"].map(str::to_owned));
        let users = self
            .paged(server, &self.user_base, &filter, attributes, limit)
            .await?;
        let disabled: BTreeSet<String> = match &self.disabled_filter {
            Some(extra) => self
                .paged(
                    server,
                    &self.user_base,
                    &format!("(&{filter}{extra})"),
                    vec!["1.1".to_owned()],
                    limit,
                )
                .await?
                .entries
                .into_iter()
                .map(|entry| entry.dn.to_lowercase())
                .collect(),
            None => BTreeSet::new(),
        };
        let searched = match &self.group_search {
            Some(search) => Some(self.group_members(server, search, limit).await?),
            None => None,
        };
        // Missing group entries could hide members: the listing is then incomplete too.
        let truncated = users.truncated || searched.as_ref().is_some_and(|g| g.truncated);
        let a = &self.attributes;
        let accounts = users
            .entries
            .into_iter()
            .map(|entry| {
                let attrs = &entry.attrs;
                let username = first(attrs, &a.username).unwrap_or_default().to_lowercase();
                let id = first(attrs, &a.id)
                    .map(str::to_owned)
                    .or_else(|| {
                        entry
                            .bin_attrs
                            .get(&a.id)
                            .and_then(|v| v.first())
                            .map(|bytes| hex(bytes))
                    })
                    .unwrap_or_else(|| entry.dn.clone());
                let mut groups: Vec<String> = attrs
                    .iter()
                    .filter(|(key, _)| key.eq_ignore_ascii_case(&a.groups))
                    .flat_map(|(_, values)| values.iter().map(|v| group_name(v)))
                    .collect();
                if let Some(searched) = &searched {
                    groups.extend(searched.groups_of(&entry.dn, &username));
                }
                groups.sort();
                groups.dedup();
                let enabled =
                    !disabled_by_attributes(attrs) && !disabled.contains(&entry.dn.to_lowercase());
                DirectoryAccount {
                    id,
                    username,
                    groups,
                    enabled,
                    person: first(attrs, "givenName").is_some() || first(attrs, "sn").is_some(),
                    created: first(attrs, "createTimestamp")
                        .or_else(|| first(attrs, "whenCreated"))
                        .and_then(generalized_time),
                }
            })
            .collect();
        Ok(AccountListing {
            accounts,
            truncated,
        })
    }

    /// The group entries under `search.base` and whom they list.
    async fn group_members(
        &self,
        server: &Server,
        search: &GroupSearchConfig,
        limit: usize,
    ) -> Result<GroupMembers, OpError> {
        let attributes = [
            search.name_attribute.as_str(),
            "member",
            "uniqueMember",
            "memberUid",
        ]
        .map(str::to_owned)
        .to_vec();
        let filter = "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)\
                      (objectClass=posixGroup)(objectClass=group))";
        let page = self
            .paged(
                server,
                &search.base,
                filter,
                attributes,
                MAX_GROUP_ENTRIES.max(limit),
            )
            .await?;
        let mut groups = GroupMembers {
            depth: search.nested_depth,
            truncated: page.truncated,
            ..GroupMembers::default()
        };
        for entry in page.entries {
            let Some(name) = first(&entry.attrs, &search.name_attribute) else {
                continue;
            };
            let name = name.to_owned();
            let dn = entry.dn.to_lowercase();
            groups.names.insert(dn.clone(), name);
            for (key, values) in &entry.attrs {
                for value in values {
                    let member = if key.eq_ignore_ascii_case("memberUid") {
                        Member::Username(value.to_lowercase())
                    } else if key.eq_ignore_ascii_case("member")
                        || key.eq_ignore_ascii_case("uniqueMember")
                    {
                        // uniqueMember may carry `#'0101'B` after the DN.
                        let dn = value.split('#').next().unwrap_or_default();
                        Member::Dn(dn.trim().to_lowercase())
                    } else {
                        continue;
                    };
                    groups.listed_in.entry(member).or_default().push(dn.clone());
                }
            }
        }
        Ok(groups)
    }

    /// One subtree search of at most `limit` entries, in pages on a service connection. A
    /// search stopped at the limit is abandoned on the server.
    async fn paged(
        &self,
        server: &Server,
        base: &str,
        filter: &str,
        attributes: Vec<String>,
        limit: usize,
    ) -> Result<Page, OpError> {
        let page_size = i32::try_from(PAGE_SIZE.min(limit.saturating_add(1))).unwrap_or(1);
        let mut ldap = self.service_connection(server).await?;
        let mut stream = ldap
            .with_timeout(self.timeout)
            .streaming_search_with(
                PagedResults::new(page_size),
                base,
                Scope::Subtree,
                filter,
                attributes,
            )
            .await?;
        let mut entries = Vec::new();
        while let Some(raw) = stream.next().await? {
            if entries.len() == limit {
                let id = stream.ldap_handle().last_id();
                // The server stops on its own when the connection goes; an abandon that
                // fails changes nothing about what was listed.
                let _ = stream.ldap_handle().abandon(id).await;
                return Ok(Page {
                    entries,
                    truncated: true,
                });
            }
            // ldap3 panics on malformed BER from the server: a broken directory must not
            // take the monitor down with it.
            let entry = std::panic::catch_unwind(AssertUnwindSafe(|| SearchEntry::construct(raw)))
                .map_err(|_| OpError::Transport("the directory sent a malformed entry".into()))?;
            // Search references and the like carry no DN.
            if !entry.dn.is_empty() {
                entries.push(entry);
            }
        }
        let result = stream.finish().await;
        match result.rc {
            0 => Ok(Page {
                entries,
                truncated: false,
            }),
            // sizeLimitExceeded: the server's own limit cut the listing.
            4 => Ok(Page {
                entries,
                truncated: true,
            }),
            32 => Err(OpError::Answer(
                crate::federation::directory::DirectoryFailure::Unavailable(format!(
                    "search base {base} does not exist"
                )),
            )),
            rc => Err(OpError::Transport(format!(
                "listing under {base} failed with result code {rc}: {}",
                result.text
            ))),
        }
    }
}

/// Whom a member value of a group entry names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Member {
    Dn(String),
    Username(String),
}

/// Group entries found by `group_search`: DN to name, and in which groups each member is
/// listed. DNs are lowercased.
#[derive(Debug, Default)]
struct GroupMembers {
    names: HashMap<String, String>,
    listed_in: BTreeMap<Member, Vec<String>>,
    depth: u32,
    /// The directory held more group entries than were read.
    truncated: bool,
}

impl GroupMembers {
    /// The names of the groups listing the account, directly or through groups in groups to
    /// the configured depth.
    fn groups_of(&self, dn: &str, username: &str) -> Vec<String> {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut level: Vec<&str> = [
            Member::Dn(dn.to_lowercase()),
            Member::Username(username.to_owned()),
        ]
        .iter()
        .filter_map(|member| self.listed_in.get(member))
        .flatten()
        .map(String::as_str)
        .collect();
        for _ in 0..=self.depth {
            let mut next = Vec::new();
            for group in level {
                if !seen.insert(group) {
                    continue;
                }
                if let Some(parents) = self.listed_in.get(&Member::Dn(group.to_owned())) {
                    next.extend(parents.iter().map(String::as_str));
                }
            }
            if next.is_empty() {
                break;
            }
            level = next;
        }
        seen.iter()
            .filter_map(|dn| self.names.get(*dn).cloned())
            .collect()
    }
}

/// Account state shown by the entry itself: OpenLDAP's administrative lock, Active
/// Directory's disabled flag. (A temporary lockout is not a disabled account.)
fn disabled_by_attributes(attrs: &HashMap<String, Vec<String>>) -> bool {
    let admin_locked = first(attrs, "pwdAccountLockedTime").is_some_and(|v| v == ADMIN_LOCKED);
    let flags = first(attrs, "userAccountControl")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    admin_locked || flags & UF_ACCOUNTDISABLE != 0
}

/// `20261204231500Z` or Active Directory's `20261204231500.0Z`.
fn generalized_time(value: &str) -> Option<DateTime<Utc>> {
    let digits = value.get(..14)?;
    NaiveDateTime::parse_from_str(digits, "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_times() {
        assert_eq!(
            generalized_time("20261204231500Z").map(|t| t.to_rfc3339()),
            Some("2026-12-04T23:15:00+00:00".to_owned())
        );
        assert!(generalized_time("20261204231500.0Z").is_some());
        assert_eq!(generalized_time("yesterday"), None);
        assert_eq!(generalized_time(""), None);
    }

    #[test]
    fn nested_groups_to_the_configured_depth() {
        let mut groups = GroupMembers::default();
        for (dn, name) in [("cn=a", "a"), ("cn=b", "b"), ("cn=c", "c")] {
            groups.names.insert(dn.into(), name.into());
        }
        // jana is in a; a is in b; b is in c; ilze is in a by memberUid.
        groups
            .listed_in
            .insert(Member::Dn("uid=jana".into()), vec!["cn=a".into()]);
        groups
            .listed_in
            .insert(Member::Dn("cn=a".into()), vec!["cn=b".into()]);
        groups
            .listed_in
            .insert(Member::Dn("cn=b".into()), vec!["cn=c".into()]);
        groups
            .listed_in
            .insert(Member::Username("ilze".into()), vec!["cn=a".into()]);
        assert_eq!(groups.groups_of("UID=jana", "jana"), ["a"]);
        groups.depth = 1;
        assert_eq!(groups.groups_of("uid=jana", "jana"), ["a", "b"]);
        groups.depth = 5;
        assert_eq!(groups.groups_of("uid=x", "ilze"), ["a", "b", "c"]);
    }

    #[test]
    fn account_state_from_attributes() {
        let attrs =
            |key: &str, value: &str| HashMap::from([(key.to_owned(), vec![value.to_owned()])]);
        assert!(disabled_by_attributes(&attrs(
            "pwdAccountLockedTime",
            ADMIN_LOCKED
        )));
        assert!(!disabled_by_attributes(&attrs(
            "pwdAccountLockedTime",
            "20261204231500Z"
        )));
        assert!(disabled_by_attributes(&attrs("userAccountControl", "514")));
        assert!(!disabled_by_attributes(&attrs("userAccountControl", "512")));
    }
}
