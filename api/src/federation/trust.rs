//! Trust relationships between realms and the access decision they drive.
//!
//! Modelled on directory trusts: a trust `{trusting: O, trusted: R}` lets applications owned by
//! realm O accept users authenticated by realm R. Trusts are directed (O trusting R says nothing
//! about R trusting O), non-transitive (O trusts R and R trusts S does not let S into O), and
//! selective (only the listed groups of R are admitted) and may be scoped to some of O's
//! applications (as Active Directory's selective authentication allows a trusted forest's
//! users onto chosen servers only).
//!
//! Groups are always qualified with the realm they come from (`talsi:staff`), so a trusted
//! realm can never hand its users a trusting realm's own group, whatever its directory says.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::TrustConfig;

/// A realm-qualified group name as tokens carry it: `realm:group`.
pub fn qualify(realm: &str, group: &str) -> String {
    format!("{realm}:{group}")
}

/// One trust, ready for decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    pub trusting: String,
    pub trusted: String,
    /// Admitted groups of the trusted realm (unqualified); empty admits every user.
    pub groups: BTreeSet<String>,
    /// Trusted realm's group -> role in the trusting realm.
    pub roles: BTreeMap<String, String>,
    /// Client ids of the trusting realm's applications the trust admits to; empty admits to
    /// every one of them.
    pub clients: BTreeSet<String>,
}

impl From<&TrustConfig> for Trust {
    fn from(config: &TrustConfig) -> Self {
        Self {
            trusting: config.trusting.clone(),
            trusted: config.trusted.clone(),
            groups: config.groups.iter().cloned().collect(),
            roles: config.roles.clone(),
            clients: config.clients.iter().cloned().collect(),
        }
    }
}

/// Why a user may use an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The application belongs to the user's own realm.
    OwnRealm,
    /// A trust admitted the user; `roles` are the roles it maps the user's groups to.
    Trusted {
        trusting: String,
        trusted: String,
        roles: Vec<String>,
    },
}

/// Why a user may not use an application.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    #[error("realm {client_realm} does not trust realm {user_realm}")]
    NoTrust {
        client_realm: String,
        user_realm: String,
    },
    #[error("realm {client_realm} trusts realm {user_realm} only for groups the user is not in")]
    GroupNotAdmitted {
        client_realm: String,
        user_realm: String,
    },
    #[error(
        "realm {client_realm} trusts realm {user_realm} only for other applications than {client_id}"
    )]
    ClientNotAdmitted {
        client_realm: String,
        user_realm: String,
        client_id: String,
    },
}

/// Every configured trust, indexed by (trusting, trusted).
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    trusts: BTreeMap<(String, String), Trust>,
}

impl TrustPolicy {
    pub fn new(trusts: impl IntoIterator<Item = Trust>) -> Self {
        Self {
            trusts: trusts
                .into_iter()
                .map(|t| ((t.trusting.clone(), t.trusted.clone()), t))
                .collect(),
        }
    }

    pub fn from_config(trusts: &[TrustConfig]) -> Self {
        Self::new(trusts.iter().map(Trust::from))
    }

    /// May a user of `user_realm` in `user_groups` (unqualified names from their own directory)
    /// use the application `client_id`, owned by `client_realm`?
    pub fn decide(
        &self,
        user_realm: &str,
        user_groups: &[String],
        client_realm: &str,
        client_id: &str,
    ) -> Result<Access, AccessDenied> {
        if user_realm == client_realm {
            return Ok(Access::OwnRealm);
        }
        let Some(trust) = self
            .trusts
            .get(&(client_realm.to_owned(), user_realm.to_owned()))
        else {
            return Err(AccessDenied::NoTrust {
                client_realm: client_realm.to_owned(),
                user_realm: user_realm.to_owned(),
            });
        };
        if !trust.clients.is_empty() && !trust.clients.contains(client_id) {
            return Err(AccessDenied::ClientNotAdmitted {
                client_realm: client_realm.to_owned(),
                user_realm: user_realm.to_owned(),
                client_id: client_id.to_owned(),
            });
        }
        let admitted =
            trust.groups.is_empty() || user_groups.iter().any(|g| trust.groups.contains(g));
        if !admitted {
            return Err(AccessDenied::GroupNotAdmitted {
                client_realm: client_realm.to_owned(),
                user_realm: user_realm.to_owned(),
            });
        }
        let roles: BTreeSet<String> = user_groups
            .iter()
            .filter_map(|g| trust.roles.get(g).cloned())
            .collect();
        Ok(Access::Trusted {
            trusting: trust.trusting.clone(),
            trusted: trust.trusted.clone(),
            roles: roles.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|g| (*g).to_owned()).collect()
    }

    /// Ventspils trusts Talsi for vpvkac-staff; Talsi trusts Kuldīga for everyone.
    fn policy() -> TrustPolicy {
        TrustPolicy::new([
            Trust {
                trusting: "ventspils".into(),
                trusted: "talsi".into(),
                groups: ["vpvkac-staff".to_owned()].into(),
                roles: [("vpvkac-staff".to_owned(), "operator".to_owned())].into(),
                clients: BTreeSet::new(),
            },
            Trust {
                trusting: "talsi".into(),
                trusted: "kuldiga".into(),
                groups: BTreeSet::new(),
                roles: BTreeMap::new(),
                clients: BTreeSet::new(),
            },
        ])
    }

    #[test]
    fn own_realm_always_has_access() {
        assert_eq!(
            policy().decide("talsi", &[], "talsi", "app"),
            Ok(Access::OwnRealm)
        );
    }

    #[test]
    fn trusted_group_is_admitted_with_mapped_roles() {
        let decision = policy().decide(
            "talsi",
            &groups(&["vpvkac-staff", "it-admins"]),
            "ventspils",
            "app",
        );
        assert_eq!(
            decision,
            Ok(Access::Trusted {
                trusting: "ventspils".into(),
                trusted: "talsi".into(),
                roles: vec!["operator".into()],
            })
        );
    }

    #[test]
    fn other_groups_of_a_trusted_realm_are_refused() {
        let decision = policy().decide("talsi", &groups(&["accounting"]), "ventspils", "app");
        assert!(matches!(
            decision,
            Err(AccessDenied::GroupNotAdmitted { .. })
        ));
    }

    #[test]
    fn trusts_are_directed() {
        // Ventspils trusts Talsi; Talsi does not trust Ventspils.
        let decision = policy().decide("ventspils", &groups(&["vpvkac-staff"]), "talsi", "app");
        assert!(matches!(decision, Err(AccessDenied::NoTrust { .. })));
    }

    #[test]
    fn trusts_are_not_transitive() {
        // Ventspils trusts Talsi, Talsi trusts Kuldīga: Kuldīga is still not trusted by Ventspils.
        let decision = policy().decide("kuldiga", &groups(&["vpvkac-staff"]), "ventspils", "app");
        assert!(matches!(decision, Err(AccessDenied::NoTrust { .. })));
    }

    #[test]
    fn empty_group_list_admits_everyone() {
        let decision = policy().decide("kuldiga", &[], "talsi", "app");
        assert!(matches!(decision, Ok(Access::Trusted { roles, .. }) if roles.is_empty()));
    }

    #[test]
    fn foreign_groups_cannot_impersonate_local_ones() {
        // A Talsi directory group literally named "ventspils:it-admins" stays a Talsi group.
        assert_eq!(
            qualify("talsi", "ventspils:it-admins"),
            "talsi:ventspils:it-admins"
        );
        assert!(!qualify("talsi", "ventspils:it-admins").starts_with("ventspils:"));
        // And it is not the admitted group either.
        let decision = policy().decide(
            "talsi",
            &groups(&["ventspils:vpvkac-staff"]),
            "ventspils",
            "app",
        );
        assert!(matches!(
            decision,
            Err(AccessDenied::GroupNotAdmitted { .. })
        ));
    }

    #[test]
    fn a_trust_scoped_to_applications_admits_to_those_alone() {
        let mut trust = Trust::from(&crate::config::TrustConfig {
            trusting: "ventspils".into(),
            trusted: "talsi".into(),
            groups: vec!["vpvkac-staff".into()],
            roles: BTreeMap::new(),
            clients: vec!["vpvkac".into()],
        });
        let scoped = TrustPolicy::new([trust.clone()]);
        let staff = groups(&["vpvkac-staff"]);
        assert!(matches!(
            scoped.decide("talsi", &staff, "ventspils", "vpvkac"),
            Ok(Access::Trusted { .. })
        ));
        assert!(matches!(
            scoped.decide("talsi", &staff, "ventspils", "redmine"),
            Err(AccessDenied::ClientNotAdmitted { client_id, .. }) if client_id == "redmine"
        ));
        // No list: every application of the trusting realm, as before.
        trust.clients.clear();
        let unscoped = TrustPolicy::new([trust]);
        assert!(
            unscoped
                .decide("talsi", &staff, "ventspils", "redmine")
                .is_ok()
        );
    }
}
