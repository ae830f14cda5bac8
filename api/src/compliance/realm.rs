//! The facts a realm's configuration decides (how its directory is reached, when accounts
//! lock) and those its directory's password policies decide. Pure: no I/O.

use novads_monitor::facts::RealmFacts;

use crate::config::{LockoutConfig, RealmConfig};
use crate::federation::directory::PasswordPolicy;

/// The password facts, filled in by [`password_facts`] or named as uncollected.
pub const PASSWORD_FACTS: [&str; 5] = [
    "password_policies",
    "password_min_length",
    "directory_lockout_failures",
    "password_max_age_days",
    "password_history",
];

/// What the embedded directory's "policy" is: novads checks its passwords, so novads's own
/// lockout is the directory's, and nothing else is enforced.
const EMBEDDED_POLICY: &str = "novads (embedded directory)";

/// Settings facts of `realm` under the platform's lockout policy.
///
/// A static directory lives in the configuration file and is never reached over a network, so
/// nothing travels unencrypted and there is no certificate to skip.
pub fn realm_settings(realm: &RealmConfig, lockout: &LockoutConfig) -> RealmFacts {
    let (tls, verified) = match &realm.ldap {
        Some(ldap) => {
            let tls = !ldap.urls.is_empty()
                && ldap.urls.iter().all(|url| {
                    let url = url.trim().to_ascii_lowercase();
                    url.starts_with("ldaps://") || (ldap.start_tls && url.starts_with("ldap://"))
                });
            (tls, !ldap.insecure)
        }
        None => (true, true),
    };
    let mut facts = RealmFacts {
        directory_tls: Some(tls),
        directory_certificate_verified: Some(verified),
        lockout_threshold: Some(i64::from(lockout.max_failures)),
        ..RealmFacts::default()
    };
    if realm.ldap.is_none() {
        // A static directory is reached only through novads's sign-in: no minimum length,
        // expiry or history, and novads's lockout.
        facts.password_policies = Some(vec![EMBEDDED_POLICY.to_owned()]);
        facts.password_min_length = Some(0);
        facts.directory_lockout_failures = Some(i64::from(lockout.max_failures));
        facts.password_max_age_days = Some(0);
        facts.password_history = Some(0);
    }
    facts
}

/// The password facts of a directory stating `policies` (at least one): each the weakest
/// value among them, since an account may fall under any of them.
///
/// Per draft-behera-ldap-password-policy, `pwdMinLength` is enforced only when quality is
/// checked (`pwdCheckQuality` 1 or 2), and `pwdMaxFailure` only with `pwdLockout: TRUE` (0 is
/// no limit).
pub fn password_facts(policies: &[PasswordPolicy], facts: &mut RealmFacts) {
    let min_length = |p: &PasswordPolicy| {
        if p.check_quality > 0 {
            i64::from(p.min_length)
        } else {
            0
        }
    };
    // 0 (never) is the weakest lockout and the weakest expiry; otherwise the larger.
    let lockout = |p: &PasswordPolicy| {
        if p.lockout && p.max_failure > 0 {
            i64::from(p.max_failure)
        } else {
            0
        }
    };
    let max_age_days =
        |p: &PasswordPolicy| i64::try_from(p.max_age_seconds.div_ceil(86_400)).unwrap_or(i64::MAX);
    let weakest_of_never_or_most = |values: Vec<i64>| {
        if values.contains(&0) {
            Some(0)
        } else {
            values.into_iter().max()
        }
    };
    facts.password_policies = Some(policies.iter().map(|p| p.dn.clone()).collect());
    facts.password_min_length = policies.iter().map(min_length).min();
    facts.directory_lockout_failures =
        weakest_of_never_or_most(policies.iter().map(lockout).collect());
    facts.password_max_age_days =
        weakest_of_never_or_most(policies.iter().map(max_age_days).collect());
    facts.password_history = policies.iter().map(|p| i64::from(p.in_history)).min();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LdapConfig, StaticDirectoryConfig};

    fn ldap_realm(urls: &[&str], start_tls: bool, insecure: bool) -> RealmConfig {
        let mut ldap = LdapConfig::new(
            urls.iter().map(|u| (*u).to_owned()).collect(),
            "ou=people,dc=talsi,dc=lv",
        );
        ldap.start_tls = start_tls;
        ldap.insecure = insecure;
        RealmConfig {
            name: "talsi".into(),
            display_name: None,
            ldap: Some(ldap),
            static_directory: None,
        }
    }

    #[test]
    fn directory_tls_needs_ldaps_or_start_tls_on_every_url() {
        let lockout = LockoutConfig::default();
        let ldaps = realm_settings(&ldap_realm(&["ldaps://a"], false, false), &lockout);
        assert_eq!(ldaps.directory_tls, Some(true));
        assert_eq!(ldaps.directory_certificate_verified, Some(true));
        let start_tls = realm_settings(&ldap_realm(&["ldap://a"], true, false), &lockout);
        assert_eq!(start_tls.directory_tls, Some(true));
        let mixed = realm_settings(
            &ldap_realm(&["ldaps://a", "ldap://b"], false, false),
            &lockout,
        );
        assert_eq!(mixed.directory_tls, Some(false));
        let plain = realm_settings(&ldap_realm(&["ldap://a"], false, true), &lockout);
        assert_eq!(plain.directory_tls, Some(false));
        assert_eq!(plain.directory_certificate_verified, Some(false));
        assert_eq!(plain.lockout_threshold, Some(5));
    }

    fn policy(dn: &str) -> PasswordPolicy {
        PasswordPolicy {
            dn: dn.into(),
            min_length: 12,
            check_quality: 2,
            lockout: true,
            max_failure: 5,
            max_age_seconds: 90 * 86_400,
            in_history: 5,
        }
    }

    #[test]
    fn password_facts_follow_the_draft_and_take_the_weakest_policy() {
        let mut facts = RealmFacts::default();
        password_facts(&[policy("cn=default")], &mut facts);
        assert_eq!(facts.password_policies, Some(vec!["cn=default".to_owned()]));
        assert_eq!(facts.password_min_length, Some(12));
        assert_eq!(facts.directory_lockout_failures, Some(5));
        assert_eq!(facts.password_max_age_days, Some(90));
        assert_eq!(facts.password_history, Some(5));

        // Without quality checks the length is not enforced; without pwdLockout nothing
        // locks, and pwdMaxFailure 0 is no limit; a part of a day counts as a day.
        let unchecked = PasswordPolicy {
            check_quality: 0,
            lockout: false,
            max_age_seconds: 86_401,
            ..policy("cn=unchecked")
        };
        let mut facts = RealmFacts::default();
        password_facts(&[unchecked], &mut facts);
        assert_eq!(facts.password_min_length, Some(0));
        assert_eq!(facts.directory_lockout_failures, Some(0));
        assert_eq!(facts.password_max_age_days, Some(2));
        let no_limit = PasswordPolicy {
            max_failure: 0,
            ..policy("cn=no-limit")
        };
        let mut facts = RealmFacts::default();
        password_facts(&[no_limit], &mut facts);
        assert_eq!(facts.directory_lockout_failures, Some(0));

        // Several policies: an account may fall under any, so each fact is the weakest.
        let services = PasswordPolicy {
            min_length: 8,
            max_failure: 10,
            max_age_seconds: 0,
            in_history: 2,
            ..policy("cn=services")
        };
        let mut facts = RealmFacts::default();
        password_facts(&[policy("cn=default"), services], &mut facts);
        assert_eq!(facts.password_min_length, Some(8));
        assert_eq!(facts.directory_lockout_failures, Some(10));
        assert_eq!(facts.password_max_age_days, Some(0));
        assert_eq!(facts.password_history, Some(2));
    }

    #[test]
    fn a_static_directory_travels_nowhere() {
        let realm = RealmConfig {
            name: "demo".into(),
            display_name: None,
            ldap: None,
            static_directory: Some(StaticDirectoryConfig { users: Vec::new() }),
        };
        let lockout = LockoutConfig {
            max_failures: 0,
            ..LockoutConfig::default()
        };
        let facts = realm_settings(&realm, &lockout);
        assert_eq!(facts.directory_tls, Some(true));
        assert_eq!(facts.lockout_threshold, Some(0));
        // Its passwords are checked by novads alone: its lockout, nothing else.
        assert_eq!(facts.password_min_length, Some(0));
        assert_eq!(facts.directory_lockout_failures, Some(0));
        assert_eq!(facts.password_history, Some(0));
        let ldap = realm_settings(&ldap_realm(&["ldaps://a"], false, false), &lockout);
        assert_eq!(ldap.password_min_length, None, "asked of the directory");
    }
}
