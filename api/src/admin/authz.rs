//! Who the caller is and what they may do: a pure function of the token's claims, the
//! `admin_api` configuration and the Municipalities of the cluster. No I/O here; the extractor
//! in [`super::principal`] feeds it.
//!
//! Roles:
//! - `platform-admin`: everything, from `admin_api.platform_admin_groups` or a service client;
//! - `auditor`: reads everything, changes nothing;
//! - `municipality-admin` of a Municipality: its groups meet the Municipality's `adminGroups`,
//!   qualified by its realm, the rule the operator's RoleBindings follow
//!   (operator/src/municipality/build.rs);
//! - `security-officer` of a Municipality, likewise from `securityOfficerGroups`: reads the
//!   audit trail of the Municipality's realm.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use utoipa::ToSchema;

use crate::config::{AdminApiConfig, PlatformRole};
use crate::federation::trust::qualify;
use crate::oidc::jwt::AccessTokenClaims;

/// A role a token holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    PlatformAdmin,
    Auditor,
    MunicipalityAdmin,
    SecurityOfficer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlatformAdmin => "platform-admin",
            Self::Auditor => "auditor",
            Self::MunicipalityAdmin => "municipality-admin",
            Self::SecurityOfficer => "security-officer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What authorisation needs of a Municipality: its code, realm and the groups that earn
/// roles in it (written without the realm, as in the custom resource).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MunicipalityGroups {
    pub code: String,
    pub realm: String,
    #[serde(default)]
    pub admin_groups: Vec<String>,
    #[serde(default)]
    pub security_officer_groups: Vec<String>,
}

/// The roles a token holds in one Municipality.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct MunicipalityRoles {
    pub realm: String,
    pub admin: bool,
    pub security_officer: bool,
}

/// The caller behind an accepted token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The token's subject: `realm:id` for people, `client:<id>` for services.
    pub subject: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// The realm that signed the person in (a service's client realm).
    pub realm: String,
    pub platform_admin: bool,
    pub auditor: bool,
    /// Municipality code → roles there; only Municipalities with at least one role.
    pub municipalities: BTreeMap<String, MunicipalityRoles>,
}

/// Why a signed, unexpired, unrevoked token is still not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the access token was issued to client {0:?}, which the admin API does not accept")]
pub struct OtherAudience(pub String);

/// The caller's roles. Fails only for tokens issued to a client outside `admin_api.clients`;
/// a token with no role is accepted and then refused action by action.
pub fn principal(
    claims: &AccessTokenClaims,
    config: &AdminApiConfig,
    municipalities: &[MunicipalityGroups],
) -> Result<Principal, OtherAudience> {
    if !config.clients.contains(&claims.aud) {
        return Err(OtherAudience(claims.aud.clone()));
    }
    let mut principal = Principal {
        subject: claims.sub.clone(),
        client_id: claims.client_id.clone(),
        realm: claims.realm.clone(),
        platform_admin: false,
        auditor: false,
        municipalities: BTreeMap::new(),
    };
    // A `client_credentials` token belongs to no user's grant and names its client as the
    // subject (oidc/endpoints/token.rs); its roles come from the configuration alone.
    let service = claims.grant_id.is_none()
        && claims.sub.strip_prefix("client:") == Some(claims.aud.as_str());
    if service {
        let role = config
            .service_clients
            .iter()
            .find(|s| s.client_id == claims.aud)
            .map(|s| s.role);
        principal.platform_admin = role == Some(PlatformRole::PlatformAdmin);
        principal.auditor = role == Some(PlatformRole::Auditor);
        return Ok(principal);
    }
    let groups: BTreeSet<&str> = claims.groups.iter().flatten().map(String::as_str).collect();
    let member_of_any = |wanted: &[String]| wanted.iter().any(|g| groups.contains(g.as_str()));
    principal.platform_admin = member_of_any(&config.platform_admin_groups);
    principal.auditor = member_of_any(&config.auditor_groups);
    for municipality in municipalities {
        let qualified = |names: &[String]| -> Vec<String> {
            names
                .iter()
                .map(|g| qualify(&municipality.realm, g))
                .collect()
        };
        let admin = member_of_any(&qualified(&municipality.admin_groups));
        let security_officer = member_of_any(&qualified(&municipality.security_officer_groups));
        if admin || security_officer {
            principal.municipalities.insert(
                municipality.code.clone(),
                MunicipalityRoles {
                    realm: municipality.realm.clone(),
                    admin,
                    security_officer,
                },
            );
        }
    }
    Ok(principal)
}

/// Something the caller asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Read the realms, trusts and clients of the configuration.
    ReadIdentity,
    /// Sign a user in through a realm to test it.
    TestRealm(&'a str),
    /// Read the audit trail: events and exports.
    ReadAudit,
    /// Verify the whole chain.
    VerifyAudit,
    /// Read a Municipality (by code) and its status.
    ReadMunicipality(&'a str),
    /// Read the virtual servers of a Municipality (by code).
    ReadServers(&'a str),
    /// Create, change, delete, start, stop or restart the virtual servers of a Municipality.
    WriteServers(&'a str),
    /// Create, change or delete Municipalities.
    WriteMunicipalities,
    /// Read the ServerImages the platform offers.
    ReadImages,
    /// Add, change or remove ServerImages.
    WriteImages,
}

impl Action<'_> {
    /// Whether the action changes anything (and is then recorded in the audit trail).
    pub fn changes_state(self) -> bool {
        matches!(
            self,
            Self::TestRealm(_)
                | Self::WriteServers(_)
                | Self::WriteMunicipalities
                | Self::WriteImages
        )
    }
}

/// Which part of the data an allowed action covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Everything,
    /// Only what belongs to these realms.
    Realms(BTreeSet<String>),
}

impl Scope {
    pub fn covers_realm(&self, realm: &str) -> bool {
        match self {
            Self::Everything => true,
            Self::Realms(realms) => realms.contains(realm),
        }
    }
}

/// An allowed action: the role that allows it and how far it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub role: Role,
    pub scope: Scope,
}

/// Why an action is refused, in words for the problem document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

impl Principal {
    /// Realms of the Municipalities where the caller holds a role accepted by `accept`.
    fn realms_where(&self, accept: impl Fn(&MunicipalityRoles) -> bool) -> BTreeSet<String> {
        self.municipalities
            .values()
            .filter(|roles| accept(roles))
            .map(|roles| roles.realm.clone())
            .collect()
    }

    /// Every role the caller holds somewhere, for `GET /api/v1/me` and messages.
    pub fn roles(&self) -> BTreeSet<Role> {
        let mut roles = BTreeSet::new();
        if self.platform_admin {
            roles.insert(Role::PlatformAdmin);
        }
        if self.auditor {
            roles.insert(Role::Auditor);
        }
        for m in self.municipalities.values() {
            if m.admin {
                roles.insert(Role::MunicipalityAdmin);
            }
            if m.security_officer {
                roles.insert(Role::SecurityOfficer);
            }
        }
        roles
    }

    /// Decides one action. Platform roles come first, so an auditor who is also a
    /// municipality admin reads with the auditor's wider scope.
    pub fn authorise(&self, action: Action<'_>) -> Result<Allowed, Denied> {
        let everything = |role| {
            Ok(Allowed {
                role,
                scope: Scope::Everything,
            })
        };
        if self.platform_admin {
            return everything(Role::PlatformAdmin);
        }
        if self.auditor && !action.changes_state() {
            return everything(Role::Auditor);
        }
        let realms = |role, realms: BTreeSet<String>, refusal: &str| {
            if realms.is_empty() {
                Err(Denied(refusal.to_owned()))
            } else {
                Ok(Allowed {
                    role,
                    scope: Scope::Realms(realms),
                })
            }
        };
        match action {
            Action::ReadIdentity => {
                let admin = self.realms_where(|m| m.admin);
                if admin.is_empty() {
                    realms(
                        Role::SecurityOfficer,
                        self.realms_where(|m| m.security_officer),
                        "reading the identity configuration needs a role in a municipality",
                    )
                } else {
                    // A municipality admin who is also a security officer elsewhere sees both.
                    realms(
                        Role::MunicipalityAdmin,
                        self.realms_where(|m| m.admin || m.security_officer),
                        "",
                    )
                }
            }
            Action::TestRealm(realm) => {
                if self.realms_where(|m| m.admin).contains(realm) {
                    Ok(Allowed {
                        role: Role::MunicipalityAdmin,
                        scope: Scope::Realms([realm.to_owned()].into()),
                    })
                } else {
                    Err(Denied(format!(
                        "testing realm {realm:?} needs platform-admin or municipality-admin of a \
                         municipality of that realm"
                    )))
                }
            }
            Action::ReadAudit => realms(
                Role::SecurityOfficer,
                self.realms_where(|m| m.security_officer),
                "reading the audit trail needs platform-admin, auditor or security-officer",
            ),
            Action::ReadMunicipality(code) | Action::ReadServers(code) => {
                match self.municipalities.get(code) {
                    Some(roles) if roles.admin || roles.security_officer => Ok(Allowed {
                        role: if roles.admin {
                            Role::MunicipalityAdmin
                        } else {
                            Role::SecurityOfficer
                        },
                        scope: Scope::Realms([roles.realm.clone()].into()),
                    }),
                    _ => Err(Denied(format!(
                        "municipality {code:?} is not one you hold a role in"
                    ))),
                }
            }
            Action::WriteServers(code) => match self.municipalities.get(code) {
                Some(roles) if roles.admin => Ok(Allowed {
                    role: Role::MunicipalityAdmin,
                    scope: Scope::Realms([roles.realm.clone()].into()),
                }),
                _ => Err(Denied(format!(
                    "changing the servers of municipality {code:?} needs platform-admin or \
                     municipality-admin of it"
                ))),
            },
            Action::WriteMunicipalities => Err(Denied(
                "creating, changing and deleting municipalities needs platform-admin".to_owned(),
            )),
            // What servers may be made from is no secret to anyone with a role.
            Action::ReadImages => match self.roles().into_iter().next() {
                Some(role) => Ok(Allowed {
                    role,
                    scope: Scope::Everything,
                }),
                None => Err(Denied("reading the images needs a role".to_owned())),
            },
            Action::WriteImages => Err(Denied(
                "adding, changing and removing images needs platform-admin".to_owned(),
            )),
            Action::VerifyAudit => Err(Denied(
                "verifying the whole audit chain needs platform-admin or auditor".to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServiceClientConfig;

    fn config() -> AdminApiConfig {
        AdminApiConfig {
            clients: vec!["portal".into(), "robot".into(), "reader".into()],
            platform_admin_groups: vec!["demo:platform".into()],
            auditor_groups: vec!["demo:audit".into()],
            service_clients: vec![
                ServiceClientConfig {
                    client_id: "robot".into(),
                    role: PlatformRole::PlatformAdmin,
                },
                ServiceClientConfig {
                    client_id: "reader".into(),
                    role: PlatformRole::Auditor,
                },
            ],
            cors_origins: vec![],
            rate_limit: Default::default(),
        }
    }

    fn municipalities() -> Vec<MunicipalityGroups> {
        vec![
            MunicipalityGroups {
                code: "talsi".into(),
                realm: "talsi".into(),
                admin_groups: vec!["it-admins".into()],
                security_officer_groups: vec!["security".into()],
            },
            MunicipalityGroups {
                code: "ventspils".into(),
                realm: "ventspils".into(),
                admin_groups: vec!["it-admins".into()],
                security_officer_groups: vec![],
            },
        ]
    }

    fn user(realm: &str, groups: &[&str]) -> AccessTokenClaims {
        AccessTokenClaims {
            sub: format!("{realm}:id-1"),
            aud: "portal".into(),
            client_id: "portal".into(),
            grant_id: Some("grant".into()),
            realm: realm.into(),
            groups: Some(groups.iter().map(|g| (*g).to_owned()).collect()),
            ..Default::default()
        }
    }

    fn service(client: &str) -> AccessTokenClaims {
        AccessTokenClaims {
            sub: format!("client:{client}"),
            aud: client.into(),
            client_id: client.into(),
            realm: "demo".into(),
            ..Default::default()
        }
    }

    fn of(claims: &AccessTokenClaims) -> Principal {
        principal(claims, &config(), &municipalities()).expect("accepted")
    }

    #[test]
    fn tokens_for_other_clients_are_not_accepted() {
        let mut claims = user("demo", &["demo:platform"]);
        claims.aud = "demo-app".into();
        assert_eq!(
            principal(&claims, &config(), &[]),
            Err(OtherAudience("demo-app".into()))
        );
    }

    #[test]
    fn platform_roles_come_from_qualified_groups() {
        let admin = of(&user("demo", &["demo:platform"]));
        assert!(admin.platform_admin && !admin.auditor);
        let auditor = of(&user("demo", &["demo:audit"]));
        assert!(auditor.auditor && !auditor.platform_admin);
        // The same group name from another realm earns nothing.
        let namesake = of(&user("talsi", &["talsi:platform"]));
        assert!(namesake.roles().is_empty());
    }

    #[test]
    fn municipality_roles_follow_admin_and_security_officer_groups_of_its_realm() {
        let jana = of(&user("talsi", &["talsi:it-admins", "talsi:security"]));
        assert_eq!(
            jana.municipalities["talsi"],
            MunicipalityRoles {
                realm: "talsi".into(),
                admin: true,
                security_officer: true
            }
        );
        assert_eq!(jana.municipalities.len(), 1, "nothing in ventspils");
        // Ventspils' it-admins are not Talsi's.
        let peteris = of(&user("ventspils", &["ventspils:it-admins"]));
        assert_eq!(
            peteris.municipalities.keys().collect::<Vec<_>>(),
            ["ventspils"]
        );
        // Unqualified names in a token never match.
        assert!(of(&user("talsi", &["it-admins"])).roles().is_empty());
    }

    #[test]
    fn service_tokens_take_their_role_from_the_configuration_alone() {
        assert!(of(&service("robot")).platform_admin);
        let reader = of(&service("reader"));
        assert!(reader.auditor && !reader.platform_admin);
        // A service token never earns roles from groups, even if some were smuggled in.
        let mut portal = service("portal");
        portal.groups = Some(vec!["demo:platform".into()]);
        assert!(of(&portal).roles().is_empty());
    }

    #[test]
    fn auditors_read_everything_and_change_nothing() {
        let auditor = of(&service("reader"));
        for action in [Action::ReadIdentity, Action::ReadAudit, Action::VerifyAudit] {
            assert_eq!(
                auditor.authorise(action),
                Ok(Allowed {
                    role: Role::Auditor,
                    scope: Scope::Everything
                }),
                "{action:?}"
            );
        }
        assert!(auditor.authorise(Action::TestRealm("talsi")).is_err());
    }

    #[test]
    fn municipality_roles_reach_their_own_realm_only() {
        let talsi_admin = of(&user("talsi", &["talsi:it-admins"]));
        let talsi_officer = of(&user("talsi", &["talsi:security"]));
        let only_talsi = Scope::Realms(["talsi".to_owned()].into());
        assert_eq!(
            talsi_admin.authorise(Action::ReadIdentity).map(|a| a.scope),
            Ok(only_talsi.clone())
        );
        assert!(talsi_admin.authorise(Action::TestRealm("talsi")).is_ok());
        assert!(
            talsi_admin
                .authorise(Action::TestRealm("ventspils"))
                .is_err()
        );
        assert!(talsi_admin.authorise(Action::ReadAudit).is_err());
        assert!(talsi_officer.authorise(Action::TestRealm("talsi")).is_err());
        assert_eq!(
            talsi_officer.authorise(Action::ReadAudit),
            Ok(Allowed {
                role: Role::SecurityOfficer,
                scope: only_talsi
            })
        );
        assert!(talsi_officer.authorise(Action::VerifyAudit).is_err());
    }

    #[test]
    fn municipality_roles_read_their_own_municipality_only() {
        let talsi_admin = of(&user("talsi", &["talsi:it-admins"]));
        let talsi_officer = of(&user("talsi", &["talsi:security"]));
        assert_eq!(
            talsi_admin
                .authorise(Action::ReadMunicipality("talsi"))
                .map(|a| a.role),
            Ok(Role::MunicipalityAdmin)
        );
        assert_eq!(
            talsi_officer
                .authorise(Action::ReadMunicipality("talsi"))
                .map(|a| a.role),
            Ok(Role::SecurityOfficer)
        );
        for principal in [&talsi_admin, &talsi_officer] {
            assert!(
                principal
                    .authorise(Action::ReadMunicipality("ventspils"))
                    .is_err()
            );
        }
        assert!(
            of(&service("reader"))
                .authorise(Action::ReadMunicipality("ventspils"))
                .is_ok()
        );
    }

    #[test]
    fn a_token_without_roles_may_do_nothing() {
        let nobody = of(&user("demo", &["demo:staff"]));
        for action in [
            Action::ReadIdentity,
            Action::TestRealm("demo"),
            Action::ReadAudit,
            Action::VerifyAudit,
            Action::ReadMunicipality("talsi"),
        ] {
            assert!(nobody.authorise(action).is_err(), "{action:?}");
        }
    }

    #[test]
    fn servers_are_changed_by_platform_admins_and_their_own_municipality_admins_only() {
        let talsi_admin = of(&user("talsi", &["talsi:it-admins"]));
        let talsi_officer = of(&user("talsi", &["talsi:security"]));
        let platform = of(&service("robot"));
        let auditor = of(&service("reader"));
        assert_eq!(
            talsi_admin
                .authorise(Action::WriteServers("talsi"))
                .map(|a| a.role),
            Ok(Role::MunicipalityAdmin)
        );
        assert!(
            talsi_admin
                .authorise(Action::WriteServers("ventspils"))
                .is_err()
        );
        assert!(
            talsi_officer
                .authorise(Action::WriteServers("talsi"))
                .is_err()
        );
        assert!(
            talsi_officer
                .authorise(Action::ReadServers("talsi"))
                .is_ok()
        );
        assert!(auditor.authorise(Action::WriteServers("talsi")).is_err());
        assert!(auditor.authorise(Action::ReadServers("talsi")).is_ok());
        assert!(
            platform
                .authorise(Action::WriteServers("ventspils"))
                .is_ok()
        );
        assert!(Action::WriteServers("talsi").changes_state());
        for principal in [&talsi_admin, &talsi_officer, &auditor] {
            assert!(principal.authorise(Action::WriteMunicipalities).is_err());
        }
        assert!(platform.authorise(Action::WriteMunicipalities).is_ok());
        for principal in [&talsi_admin, &talsi_officer, &auditor, &platform] {
            assert!(principal.authorise(Action::ReadImages).is_ok());
        }
        for principal in [&talsi_admin, &talsi_officer, &auditor] {
            assert!(principal.authorise(Action::WriteImages).is_err());
        }
        assert!(platform.authorise(Action::WriteImages).is_ok());
        assert!(!Action::ReadServers("talsi").changes_state());
    }
}
