//! Account facts from a realm's directory listing joined with the audit trail: who holds a
//! municipality's admin groups, which of them are shared accounts, and how long each enabled
//! account has gone without a sign-in. Pure: the listing and the sign-ins are read by the
//! caller ([`super::collect`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::federation::directory::AccountListing;

/// Most accounts listed per realm: as many as a fact list may hold
/// ([`novads_monitor::facts::MAX_FACT_LIST`]).
pub const MAX_ACCOUNTS: usize = novads_monitor::facts::MAX_FACT_LIST;

/// Usernames (letters only, lowercased) that name a role or a team rather than a person.
const GENERIC_NAMES: &[&str] = &[
    "admin",
    "administrator",
    "administrators",
    "backup",
    "guest",
    "helpdesk",
    "info",
    "it",
    "itadmin",
    "office",
    "operator",
    "root",
    "service",
    "shared",
    "support",
    "sysadmin",
    "test",
    "user",
];

/// The last successful sign-in of each identity, keyed by the token subject (`realm:id`) and
/// by the qualified username (`user@realm`), as the audit trail records both.
#[derive(Debug, Default, Clone)]
pub struct LastSignIns {
    pub by_key: BTreeMap<String, DateTime<Utc>>,
    /// The oldest row of the audit trail: before it, nothing is known about sign-ins.
    pub trail_start: Option<DateTime<Utc>>,
    /// Successful sign-ins of the last 24 hours: each identity's keys (as `by_key`) and how
    /// many times it signed in.
    pub last_24h: Vec<(Vec<String>, i64)>,
}

impl LastSignIns {
    /// Records a sign-in at `at` under each of `keys`, keeping the latest.
    pub fn record(&mut self, keys: impl IntoIterator<Item = String>, at: DateTime<Utc>) {
        for key in keys {
            let last = self.by_key.entry(key).or_insert(at);
            if at > *last {
                *last = at;
            }
        }
    }
}

/// Per enabled account of `realm`, days since its last sign-in. An account that never
/// signed in counts from its creation, but never from before the audit trail starts (the
/// trail cannot tell what happened earlier); with an empty trail nothing is known yet: 0.
pub fn days_since_sign_in(
    listing: &AccountListing,
    realm: &str,
    sign_ins: &LastSignIns,
    now: DateTime<Utc>,
) -> Vec<i64> {
    listing
        .accounts
        .iter()
        .filter(|account| account.enabled)
        .map(|account| {
            let subject = format!("{realm}:{}", account.id);
            let qualified = format!("{}@{realm}", account.username);
            let last = [subject, qualified]
                .iter()
                .filter_map(|key| sign_ins.by_key.get(key))
                .max()
                .copied();
            let since = last.or_else(|| {
                let start = sign_ins.trail_start?;
                Some(account.created.map_or(start, |created| created.max(start)))
            });
            since.map_or(0, |at| (now - at).num_days().max(0))
        })
        .collect()
}

/// Admin facts of a municipality: the distinct accounts in any of `admin_groups` (enabled or
/// not: a disabled member is one re-enable away from the role), and how many of them are
/// shared or generic accounts.
pub fn admin_members(listing: &AccountListing, admin_groups: &[String]) -> (i64, i64) {
    let wanted: BTreeSet<&str> = admin_groups.iter().map(String::as_str).collect();
    let mut members = BTreeSet::new();
    let mut generic = 0i64;
    for account in &listing.accounts {
        if account.groups.iter().any(|g| wanted.contains(g.as_str()))
            && members.insert(account.id.as_str())
            && is_generic(&account.username, account.person)
        {
            generic += 1;
        }
    }
    (i64::try_from(members.len()).unwrap_or(i64::MAX), generic)
}

/// Successful sign-ins of the last 24 hours by members of `admin_groups` in `realm`'s listing
/// (enabled or not), matched by token subject or qualified username as
/// [`days_since_sign_in`] matches them.
pub fn admin_sign_ins(
    listing: &AccountListing,
    realm: &str,
    admin_groups: &[String],
    sign_ins: &LastSignIns,
) -> i64 {
    let wanted: BTreeSet<&str> = admin_groups.iter().map(String::as_str).collect();
    let admin_keys: BTreeSet<String> = listing
        .accounts
        .iter()
        .filter(|account| account.groups.iter().any(|g| wanted.contains(g.as_str())))
        .flat_map(|account| {
            [
                format!("{realm}:{}", account.id),
                format!("{}@{realm}", account.username),
            ]
        })
        .collect();
    sign_ins
        .last_24h
        .iter()
        .filter(|(keys, _)| keys.iter().any(|key| admin_keys.contains(key)))
        .map(|(_, count)| count)
        .sum()
}

/// An account is generic when its entry names no person, or its username, stripped to its
/// letters, names a role (`admin2`, `it-admin`, `Support`).
fn is_generic(username: &str, person: bool) -> bool {
    let letters: String = username
        .chars()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .collect();
    !person || GENERIC_NAMES.contains(&letters.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::directory::DirectoryAccount;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn account(username: &str, groups: &[&str], enabled: bool) -> DirectoryAccount {
        DirectoryAccount {
            id: format!("id-{username}"),
            username: username.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            enabled,
            person: true,
            created: None,
        }
    }

    #[test]
    fn admins_are_counted_once_across_groups() {
        let mut shared = account("it-admin", &["servers"], true);
        shared.person = true;
        let mut robot = account("backupbot", &["it-admins"], true);
        robot.person = false;
        let listing = AccountListing {
            accounts: vec![
                account("jana", &["it-admins", "servers"], true),
                account("ilze", &["accounting"], true),
                account("andris", &["servers"], false),
                shared,
                robot,
            ],
            truncated: false,
        };
        let groups = ["it-admins".to_owned(), "servers".to_owned()];
        assert_eq!(admin_members(&listing, &groups), (4, 2));
        assert_eq!(admin_members(&listing, &["nobody".to_owned()]), (0, 0));
    }

    #[test]
    fn admin_sign_ins_count_members_of_the_admin_groups_only() {
        let listing = AccountListing {
            accounts: vec![
                account("jana", &["it-admins"], true),
                account("ilze", &["staff"], true),
            ],
            truncated: false,
        };
        let sign_ins = LastSignIns {
            last_24h: vec![
                // jana by token subject, then by username; ilze is no admin.
                (vec!["talsi:id-jana".into(), "jana@talsi".into()], 3),
                (vec!["jana@talsi".into()], 1),
                (vec!["talsi:id-ilze".into(), "ilze@talsi".into()], 5),
            ],
            ..LastSignIns::default()
        };
        let groups = ["it-admins".to_owned()];
        assert_eq!(admin_sign_ins(&listing, "talsi", &groups, &sign_ins), 4);
        assert_eq!(admin_sign_ins(&listing, "other", &groups, &sign_ins), 0);
    }

    #[test]
    fn generic_names() {
        assert!(is_generic("admin2", true));
        assert!(is_generic("Support", true));
        assert!(is_generic("jana", false));
        assert!(!is_generic("jana", true));
        assert!(!is_generic("janis.berzins", true));
    }

    #[test]
    fn days_since_the_last_sign_in_or_creation() {
        let now = at("2026-12-01T00:00:00Z");
        let mut created_recently = account("new", &[], true);
        created_recently.created = Some(at("2026-11-21T00:00:00Z"));
        let mut created_long_ago = account("old", &[], true);
        created_long_ago.created = Some(at("2020-01-01T00:00:00Z"));
        let listing = AccountListing {
            accounts: vec![
                account("jana", &[], true),
                account("gone", &[], false),
                created_recently,
                created_long_ago,
                account("ilze", &[], true),
            ],
            truncated: false,
        };
        let mut sign_ins = LastSignIns {
            trail_start: Some(at("2026-06-04T00:00:00Z")),
            ..LastSignIns::default()
        };
        sign_ins.record(["jana@talsi".to_owned()], at("2026-11-01T00:00:00Z"));
        sign_ins.record(["talsi:id-jana".to_owned()], at("2026-11-30T00:00:00Z"));
        assert_eq!(
            days_since_sign_in(&listing, "talsi", &sign_ins, now),
            // jana: 1 (the later of both keys); gone: disabled, not listed; new: since its
            // creation; old and ilze: since the trail starts.
            [1, 10, 180, 180]
        );
        let empty = LastSignIns::default();
        assert_eq!(
            days_since_sign_in(&listing, "talsi", &empty, now),
            [0, 0, 0, 0]
        );
    }
}
