//! The facts a realm's configuration decides: how its directory is reached and when accounts
//! lock. Pure: no I/O.

use novads_monitor::facts::RealmFacts;

use crate::config::{LockoutConfig, RealmConfig};

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
    RealmFacts {
        directory_tls: Some(tls),
        directory_certificate_verified: Some(verified),
        lockout_threshold: Some(i64::from(lockout.max_failures)),
        ..RealmFacts::default()
    }
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
    }
}
