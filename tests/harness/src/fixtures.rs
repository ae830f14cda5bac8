//! The fixture directories: three municipalities, their users, groups and
//! passwords.
//!
//! The LDIF files in `tests/harness/fixtures/` are the source loaded into
//! slapd; the constants here describe them so tests never spell a DN or a
//! password twice. A unit test checks that both agree.
//!
//! | realm       | user            | groups                      | note                          |
//! |-------------|-----------------|-----------------------------|-------------------------------|
//! | `talsi`     | `jana`          | `it-admins`, `vpvkac-staff` |                               |
//! | `talsi`     | `ilze`          | `accounting`                |                               |
//! | `talsi`     | `disabled`      | `accounting`                | locked by an administrator    |
//! | `talsi`     | `janis.berzins` | `vpvkac-staff`              | DN with `,` `"` and `ē ņ š`   |
//! | `talsi`     | `lockout`       | —                           | for lockout tests             |
//! | `ventspils` | `peteris`       | `vpvkac-staff`              |                               |
//! | `ventspils` | `agnese`        | `it-admins`                 |                               |
//! | `ventspils` | `jana`          | `accounting`                | namesake of `jana@talsi`      |
//! | `kuldiga`   | `edgars`        | `it-admins`                 |                               |
//! | `kuldiga`   | `liga`          | `library`, `vpvkac-staff`   |                               |

use std::fmt;

/// Group `it-admins` (talsi, ventspils, kuldiga).
pub const IT_ADMINS: &str = "it-admins";
/// Group `vpvkac-staff` (talsi, ventspils, kuldiga).
pub const VPVKAC_STAFF: &str = "vpvkac-staff";
/// Group `accounting` (talsi, ventspils).
pub const ACCOUNTING: &str = "accounting";
/// Group `library` (kuldiga).
pub const LIBRARY: &str = "library";

/// The default password policy every fixture directory carries at
/// `cn=default,ou=policies,<suffix>` (ppolicy overlay, `ppolicy_use_lockout`).
pub mod policy {
    /// `pwdMaxFailure`: failed binds before the account locks.
    pub const MAX_FAILURE: u32 = 5;
    /// `pwdLockoutDuration` in seconds.
    pub const LOCKOUT_DURATION_SECS: u64 = 900;
    /// `pwdFailureCountInterval` in seconds.
    pub const FAILURE_COUNT_INTERVAL_SECS: u64 = 900;
    /// `pwdAccountLockedTime` value meaning "locked by an administrator until
    /// unlocked", as carried by [`talsi::DISABLED`](super::talsi::DISABLED).
    pub const ADMIN_LOCKED_TIME: &str = "000001010000Z";
    /// RDN of the policy entry under `ou=policies,<suffix>`.
    pub const RDN: &str = "cn=default";
}

/// A municipality with its own fixture directory (and realm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Municipality {
    /// Talsu novads, realm `talsi`, suffix `dc=talsi,dc=lv`.
    Talsi,
    /// Ventspils valstspilsēta, realm `ventspils`, suffix `dc=ventspils,dc=lv`.
    Ventspils,
    /// Kuldīgas novads, realm `kuldiga`, suffix `dc=kuldiga,dc=lv`.
    Kuldiga,
}

impl Municipality {
    /// Every fixture municipality.
    pub const ALL: [Municipality; 3] = [
        Municipality::Talsi,
        Municipality::Ventspils,
        Municipality::Kuldiga,
    ];

    /// Realm name (users sign in as `uid@realm`).
    pub const fn realm(self) -> &'static str {
        match self {
            Self::Talsi => "talsi",
            Self::Ventspils => "ventspils",
            Self::Kuldiga => "kuldiga",
        }
    }

    /// Human-readable name, as in the `display_name` of a realm.
    pub const fn display_name(self) -> &'static str {
        match self {
            Self::Talsi => "Talsu novads",
            Self::Ventspils => "Ventspils valstspilsēta",
            Self::Kuldiga => "Kuldīgas novads",
        }
    }

    /// Directory suffix, e.g. `dc=talsi,dc=lv`.
    pub const fn suffix(self) -> &'static str {
        match self {
            Self::Talsi => "dc=talsi,dc=lv",
            Self::Ventspils => "dc=ventspils,dc=lv",
            Self::Kuldiga => "dc=kuldiga,dc=lv",
        }
    }

    /// Mail domain of the users, e.g. `talsi.lv`.
    pub const fn mail_domain(self) -> &'static str {
        match self {
            Self::Talsi => "talsi.lv",
            Self::Ventspils => "ventspils.lv",
            Self::Kuldiga => "kuldiga.lv",
        }
    }

    /// The fixture LDIF (embedded from `fixtures/<realm>.ldif`).
    pub const fn ldif(self) -> &'static str {
        match self {
            Self::Talsi => include_str!("../fixtures/talsi.ldif"),
            Self::Ventspils => include_str!("../fixtures/ventspils.ldif"),
            Self::Kuldiga => include_str!("../fixtures/kuldiga.ldif"),
        }
    }

    /// DN of the service account novads binds as (`cn=novads,ou=services,<suffix>`).
    pub const fn service_dn(self) -> &'static str {
        match self {
            Self::Talsi => "cn=novads,ou=services,dc=talsi,dc=lv",
            Self::Ventspils => "cn=novads,ou=services,dc=ventspils,dc=lv",
            Self::Kuldiga => "cn=novads,ou=services,dc=kuldiga,dc=lv",
        }
    }

    /// Password of the service account.
    pub const fn service_password(self) -> &'static str {
        match self {
            Self::Talsi => "svc-Talsi-7f3b9c",
            Self::Ventspils => "svc-Ventspils-4d2e1a",
            Self::Kuldiga => "svc-Kuldiga-9a8b7c",
        }
    }

    /// Where the users live (`ou=people,<suffix>`): the realm's `user_base`.
    pub const fn people_base(self) -> &'static str {
        match self {
            Self::Talsi => "ou=people,dc=talsi,dc=lv",
            Self::Ventspils => "ou=people,dc=ventspils,dc=lv",
            Self::Kuldiga => "ou=people,dc=kuldiga,dc=lv",
        }
    }

    /// Where the groups live (`ou=groups,<suffix>`).
    pub const fn groups_base(self) -> &'static str {
        match self {
            Self::Talsi => "ou=groups,dc=talsi,dc=lv",
            Self::Ventspils => "ou=groups,dc=ventspils,dc=lv",
            Self::Kuldiga => "ou=groups,dc=kuldiga,dc=lv",
        }
    }

    /// DN of the default password policy entry.
    pub const fn policy_dn(self) -> &'static str {
        match self {
            Self::Talsi => "cn=default,ou=policies,dc=talsi,dc=lv",
            Self::Ventspils => "cn=default,ou=policies,dc=ventspils,dc=lv",
            Self::Kuldiga => "cn=default,ou=policies,dc=kuldiga,dc=lv",
        }
    }

    /// The user filter the realm config uses (`{username}` is replaced by
    /// the escaped user name).
    pub const fn user_filter(self) -> &'static str {
        "(&(objectClass=inetOrgPerson)(uid={username}))"
    }

    /// Every user of the fixture (service account excluded).
    pub const fn users(self) -> &'static [User] {
        match self {
            Self::Talsi => talsi::USERS,
            Self::Ventspils => ventspils::USERS,
            Self::Kuldiga => kuldiga::USERS,
        }
    }

    /// Every group of the fixture.
    pub const fn groups(self) -> &'static [Group] {
        match self {
            Self::Talsi => talsi::GROUPS,
            Self::Ventspils => ventspils::GROUPS,
            Self::Kuldiga => kuldiga::GROUPS,
        }
    }

    /// The user with this `uid`, if the fixture has one.
    pub fn user(self, uid: &str) -> Option<&'static User> {
        self.users().iter().find(|u| u.uid == uid)
    }

    /// The group with this `cn`, if the fixture has one.
    pub fn group(self, cn: &str) -> Option<&'static Group> {
        self.groups().iter().find(|g| g.cn == cn)
    }

    /// The municipality whose realm is `realm`.
    pub fn from_realm(realm: &str) -> Option<Municipality> {
        Self::ALL.into_iter().find(|m| m.realm() == realm)
    }
}

impl fmt::Display for Municipality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.realm())
    }
}

/// A person in a fixture directory (`objectClass: inetOrgPerson`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    /// The directory the user lives in.
    pub municipality: Municipality,
    /// `uid`: the user name typed at the login form (before `@realm`).
    pub uid: &'static str,
    /// The entry DN exactly as slapd returns it (OpenLDAP's RFC 4514 form,
    /// hex escapes such as `\2C`, UTF-8 letters kept).
    pub dn: &'static str,
    /// `cn`.
    pub cn: &'static str,
    /// `mail`.
    pub mail: &'static str,
    /// The cleartext password (stored hashed by slapd).
    pub password: &'static str,
    /// `cn`s of the groups the user is a member of (unqualified).
    pub groups: &'static [&'static str],
    /// Administratively locked (`pwdAccountLockedTime: 000001010000Z`): every
    /// bind fails even with the right password.
    pub locked: bool,
}

impl User {
    /// `uid@realm`, what the user types into the login form.
    pub fn login(&self) -> String {
        format!("{}@{}", self.uid, self.municipality.realm())
    }

    /// Group names qualified with the realm (`talsi:vpvkac-staff`), as they
    /// appear in tokens.
    pub fn qualified_groups(&self) -> Vec<String> {
        let realm = self.municipality.realm();
        self.groups.iter().map(|g| format!("{realm}:{g}")).collect()
    }

    /// DNs of the user's groups: the expected `memberOf` values.
    pub fn group_dns(&self) -> Vec<String> {
        let base = self.municipality.groups_base();
        self.groups
            .iter()
            .map(|g| format!("cn={g},{base}"))
            .collect()
    }

    /// Whether the user is in group `cn`.
    pub fn is_member_of(&self, cn: &str) -> bool {
        self.groups.contains(&cn)
    }
}

/// A `groupOfNames` in `ou=groups` of a fixture directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// The directory the group lives in.
    pub municipality: Municipality,
    /// `cn`, the group name.
    pub cn: &'static str,
    /// The entry DN.
    pub dn: &'static str,
    /// `uid`s of the members.
    pub members: &'static [&'static str],
}

impl Group {
    /// `realm:cn`, as the group appears in tokens.
    pub fn qualified(&self) -> String {
        format!("{}:{}", self.municipality.realm(), self.cn)
    }
}

/// Generated users for load benchmarks: `bench1` … `benchN` in the Talsi directory, so that
/// concurrent sign-ins are of different accounts, as they are in an office.
pub mod bench {
    use std::fmt::Write as _;

    use super::Municipality;

    /// The cleartext password of `bench{n}` (slapd stores it hashed).
    pub fn password(n: u64) -> String {
        format!("Bench-{n}-Talsi!")
    }

    /// The login name of `bench{n}`, as typed at the login form.
    pub fn login(n: u64) -> String {
        format!("bench{n}@{}", Municipality::Talsi.realm())
    }

    /// LDIF adding `bench1` … `bench{count}` under the Talsi people base (for `Slapd::ldapadd`).
    pub fn ldif(count: u64) -> String {
        let people = Municipality::Talsi.people_base();
        let mut ldif = String::new();
        for n in 1..=count {
            let _ = write!(
                ldif,
                "dn: uid=bench{n},{people}\nobjectClass: inetOrgPerson\nuid: bench{n}\n\
                 cn: Bench User {n}\nsn: User {n}\nmail: bench{n}@talsi.lv\nuserPassword: {}\n\n",
                password(n)
            );
        }
        ldif
    }
}

/// Talsu novads (`dc=talsi,dc=lv`).
pub mod talsi {
    use super::{ACCOUNTING, Group, IT_ADMINS, Municipality, User, VPVKAC_STAFF};

    const M: Municipality = Municipality::Talsi;

    /// Jana Kalniņa: IT administrator and VPVKAC staff.
    pub const JANA: User = User {
        municipality: M,
        uid: "jana",
        dn: "uid=jana,ou=people,dc=talsi,dc=lv",
        cn: "Jana Kalniņa",
        mail: "jana@talsi.lv",
        password: "Jana-Talsi-2024!",
        groups: &[IT_ADMINS, VPVKAC_STAFF],
        locked: false,
    };

    /// Ilze Ozola: accountant, in `accounting` only.
    pub const ILZE: User = User {
        municipality: M,
        uid: "ilze",
        dn: "uid=ilze,ou=people,dc=talsi,dc=lv",
        cn: "Ilze Ozola",
        mail: "ilze@talsi.lv",
        password: "Ilze-Gramatas-31",
        groups: &[ACCOUNTING],
        locked: false,
    };

    /// An account locked by an administrator (`pwdAccountLockedTime:
    /// 000001010000Z`): binds fail even with this password.
    pub const DISABLED: User = User {
        municipality: M,
        uid: "disabled",
        dn: "uid=disabled,ou=people,dc=talsi,dc=lv",
        cn: "Andris Liepa",
        mail: "disabled@talsi.lv",
        password: "Disabled-Talsi-1",
        groups: &[ACCOUNTING],
        locked: true,
    };

    /// Jānis Bērziņš: RDN is his `cn`, which holds a comma, double quotes and
    /// non-ASCII letters; his password is non-ASCII too.
    pub const JANIS_BERZINS: User = User {
        municipality: M,
        uid: "janis.berzins",
        dn: r"cn=Bērziņš\2C Jānis \22JB\22,ou=people,dc=talsi,dc=lv",
        cn: "Bērziņš, Jānis \"JB\"",
        mail: "janis.berzins@talsi.lv",
        password: "Pūces-Ķēniņš-9",
        groups: &[VPVKAC_STAFF],
        locked: false,
    };

    /// A sacrificial account for lockout tests (no groups).
    pub const LOCKOUT: User = User {
        municipality: M,
        uid: "lockout",
        dn: "uid=lockout,ou=people,dc=talsi,dc=lv",
        cn: "Laura Kļava",
        mail: "lockout@talsi.lv",
        password: "Lockout-Talsi-5",
        groups: &[],
        locked: false,
    };

    /// Every user of Talsi.
    pub const USERS: &[User] = &[JANA, ILZE, DISABLED, JANIS_BERZINS, LOCKOUT];

    /// Every group of Talsi.
    pub const GROUPS: &[Group] = &[
        Group {
            municipality: M,
            cn: IT_ADMINS,
            dn: "cn=it-admins,ou=groups,dc=talsi,dc=lv",
            members: &["jana"],
        },
        Group {
            municipality: M,
            cn: VPVKAC_STAFF,
            dn: "cn=vpvkac-staff,ou=groups,dc=talsi,dc=lv",
            members: &["jana", "janis.berzins"],
        },
        Group {
            municipality: M,
            cn: ACCOUNTING,
            dn: "cn=accounting,ou=groups,dc=talsi,dc=lv",
            members: &["ilze", "disabled"],
        },
    ];
}

/// Ventspils valstspilsēta (`dc=ventspils,dc=lv`).
pub mod ventspils {
    use super::{ACCOUNTING, Group, IT_ADMINS, Municipality, User, VPVKAC_STAFF};

    const M: Municipality = Municipality::Ventspils;

    /// Pēteris Kalns: VPVKAC staff.
    pub const PETERIS: User = User {
        municipality: M,
        uid: "peteris",
        dn: "uid=peteris,ou=people,dc=ventspils,dc=lv",
        cn: "Pēteris Kalns",
        mail: "peteris@ventspils.lv",
        password: "Peteris-Vents-42",
        groups: &[VPVKAC_STAFF],
        locked: false,
    };

    /// Agnese Priede: IT administrator.
    pub const AGNESE: User = User {
        municipality: M,
        uid: "agnese",
        dn: "uid=agnese,ou=people,dc=ventspils,dc=lv",
        cn: "Agnese Priede",
        mail: "agnese@ventspils.lv",
        password: "Agnese-Admin-77",
        groups: &[IT_ADMINS],
        locked: false,
    };

    /// Jana Bērziņa: namesake of [`talsi::JANA`](super::talsi::JANA) (same
    /// `uid`, other realm, other password and groups).
    pub const JANA: User = User {
        municipality: M,
        uid: "jana",
        dn: "uid=jana,ou=people,dc=ventspils,dc=lv",
        cn: "Jana Bērziņa",
        mail: "jana@ventspils.lv",
        password: "Jana-Ventspils-8",
        groups: &[ACCOUNTING],
        locked: false,
    };

    /// Every user of Ventspils.
    pub const USERS: &[User] = &[PETERIS, AGNESE, JANA];

    /// Every group of Ventspils.
    pub const GROUPS: &[Group] = &[
        Group {
            municipality: M,
            cn: IT_ADMINS,
            dn: "cn=it-admins,ou=groups,dc=ventspils,dc=lv",
            members: &["agnese"],
        },
        Group {
            municipality: M,
            cn: VPVKAC_STAFF,
            dn: "cn=vpvkac-staff,ou=groups,dc=ventspils,dc=lv",
            members: &["peteris"],
        },
        Group {
            municipality: M,
            cn: ACCOUNTING,
            dn: "cn=accounting,ou=groups,dc=ventspils,dc=lv",
            members: &["jana"],
        },
    ];
}

/// Kuldīgas novads (`dc=kuldiga,dc=lv`).
pub mod kuldiga {
    use super::{Group, IT_ADMINS, LIBRARY, Municipality, User, VPVKAC_STAFF};

    const M: Municipality = Municipality::Kuldiga;

    /// Edgars Krūmiņš: IT administrator.
    pub const EDGARS: User = User {
        municipality: M,
        uid: "edgars",
        dn: "uid=edgars,ou=people,dc=kuldiga,dc=lv",
        cn: "Edgars Krūmiņš",
        mail: "edgars@kuldiga.lv",
        password: "Edgars-Kuldiga-3",
        groups: &[IT_ADMINS],
        locked: false,
    };

    /// Līga Vītola: librarian, also VPVKAC staff.
    pub const LIGA: User = User {
        municipality: M,
        uid: "liga",
        dn: "uid=liga,ou=people,dc=kuldiga,dc=lv",
        cn: "Līga Vītola",
        mail: "liga@kuldiga.lv",
        password: "Liga-Biblioteka-6",
        groups: &[LIBRARY, VPVKAC_STAFF],
        locked: false,
    };

    /// Every user of Kuldīga.
    pub const USERS: &[User] = &[EDGARS, LIGA];

    /// Every group of Kuldīga.
    pub const GROUPS: &[Group] = &[
        Group {
            municipality: M,
            cn: IT_ADMINS,
            dn: "cn=it-admins,ou=groups,dc=kuldiga,dc=lv",
            members: &["edgars"],
        },
        Group {
            municipality: M,
            cn: LIBRARY,
            dn: "cn=library,ou=groups,dc=kuldiga,dc=lv",
            members: &["liga"],
        },
        Group {
            municipality: M,
            cn: VPVKAC_STAFF,
            dn: "cn=vpvkac-staff,ou=groups,dc=kuldiga,dc=lv",
            members: &["liga"],
        },
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A minimal LDIF reader for the fixture files: records separated by
    /// blank lines, `#` comments, `attr: value` lines (no folding, no base64).
    fn parse(ldif: &str) -> Vec<(String, BTreeMap<String, Vec<String>>)> {
        let mut out = Vec::new();
        for record in ldif.split("\n\n") {
            let mut dn = None;
            let mut attrs: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for line in record.lines() {
                if line.starts_with('#') || line.trim().is_empty() {
                    continue;
                }
                assert!(!line.starts_with(' '), "folded lines unsupported: {line}");
                let (k, v) = line
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("bad line {line}"));
                if k == "dn" {
                    dn = Some(v.to_owned());
                } else {
                    attrs.entry(k.to_owned()).or_default().push(v.to_owned());
                }
            }
            if let Some(dn) = dn {
                out.push((dn, attrs));
            }
        }
        out
    }

    #[test]
    fn constants_match_the_ldif() {
        for m in Municipality::ALL {
            let entries = parse(m.ldif());
            let entry = |dn: &str| {
                entries
                    .iter()
                    .find(|(d, _)| d == dn)
                    .map(|(_, a)| a)
                    .unwrap_or_else(|| panic!("{m}: no entry {dn}"))
            };
            assert_eq!(entries[0].0, m.suffix());
            for base in [m.people_base(), m.groups_base(), m.policy_dn()] {
                entry(base);
            }
            let svc = entry(m.service_dn());
            assert_eq!(svc["userPassword"], [m.service_password()]);
            let policy = entry(m.policy_dn());
            assert_eq!(policy["pwdMaxFailure"], [policy::MAX_FAILURE.to_string()]);
            assert_eq!(
                policy["pwdLockoutDuration"],
                [policy::LOCKOUT_DURATION_SECS.to_string()]
            );
            assert_eq!(
                policy["pwdFailureCountInterval"],
                [policy::FAILURE_COUNT_INTERVAL_SECS.to_string()]
            );

            let people: Vec<_> = entries
                .iter()
                .filter(|(_, a)| a["objectClass"].iter().any(|c| c == "inetOrgPerson"))
                .collect();
            assert_eq!(people.len(), m.users().len(), "{m}: user count");
            for user in m.users() {
                assert_eq!(user.municipality, m);
                assert!(user.dn.ends_with(m.people_base()), "{}", user.dn);
                let a = entry(user.dn);
                assert_eq!(a["uid"], [user.uid]);
                assert_eq!(a["cn"], [user.cn]);
                assert_eq!(a["mail"], [user.mail]);
                assert!(user.mail.ends_with(m.mail_domain()));
                assert_eq!(a["userPassword"], [user.password]);
                assert_eq!(
                    a.get("pwdAccountLockedTime")
                        .is_some_and(|v| v == &[policy::ADMIN_LOCKED_TIME]),
                    user.locked,
                    "{}",
                    user.uid
                );
                let member_of: Vec<&str> = m
                    .groups()
                    .iter()
                    .filter(|g| entry(g.dn)["member"].iter().any(|d| d == user.dn))
                    .map(|g| g.cn)
                    .collect();
                assert_eq!(member_of, user.groups, "{}", user.uid);
            }

            let groups: Vec<_> = entries
                .iter()
                .filter(|(_, a)| a["objectClass"].iter().any(|c| c == "groupOfNames"))
                .collect();
            assert_eq!(groups.len(), m.groups().len(), "{m}: group count");
            for group in m.groups() {
                assert_eq!(group.dn, format!("cn={},{}", group.cn, m.groups_base()));
                let members: Vec<&str> = entry(group.dn)["member"]
                    .iter()
                    .map(|dn| {
                        m.users()
                            .iter()
                            .find(|u| u.dn == dn)
                            .unwrap_or_else(|| panic!("unknown member {dn}"))
                            .uid
                    })
                    .collect();
                assert_eq!(members, group.members, "{}", group.dn);
            }
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(Municipality::from_realm("talsi"), Some(Municipality::Talsi));
        assert_eq!(Municipality::from_realm("riga"), None);
        assert_eq!(Municipality::Talsi.user("jana"), Some(&talsi::JANA));
        assert_eq!(Municipality::Ventspils.user("jana"), Some(&ventspils::JANA));
        assert_eq!(talsi::JANA.login(), "jana@talsi");
        assert_eq!(
            talsi::JANA.qualified_groups(),
            ["talsi:it-admins", "talsi:vpvkac-staff"]
        );
        assert_eq!(
            Municipality::Kuldiga.group(LIBRARY).map(Group::qualified),
            Some("kuldiga:library".to_owned())
        );
        assert!(talsi::JANIS_BERZINS.is_member_of(VPVKAC_STAFF));
        assert!(!talsi::ILZE.is_member_of(VPVKAC_STAFF));
    }
}
