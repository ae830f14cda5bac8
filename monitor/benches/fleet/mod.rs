//! The platform the benchmarks evaluate: 500 municipalities, their 500 realms (1,000
//! accounts' sign-in ages each) and 10,000 virtual servers, with facts like a healthy
//! platform's.

use std::collections::BTreeMap;

use novads_monitor::facts::{
    FactsDocument, MunicipalityFacts, MunicipalityInfo, PlatformFacts, Profile, PublicPort,
    RealmFacts, VirtualServerFacts,
};
use novads_monitor::{Source, SourceState, Subject};

pub const MUNICIPALITIES: usize = 500;
pub const SERVERS: usize = 10_000;
pub const ACCOUNTS_PER_REALM: i64 = 1_000;

pub fn facts() -> FactsDocument {
    let mut document = FactsDocument {
        sources: BTreeMap::from([
            (Source::Cluster, SourceState::Collected),
            (Source::Federation, SourceState::Collected),
        ]),
        ..FactsDocument::default()
    };
    for m in 0..MUNICIPALITIES {
        let name = format!("m{m}");
        document.municipalities.push(MunicipalityInfo {
            name: name.clone(),
            namespace: format!("muni-{name}"),
            profile: if m % 5 == 0 {
                Profile::Elevated
            } else {
                Profile::Standard
            },
        });
        let facts = MunicipalityFacts {
            ready: Some(true),
            admin_groups: Some(1),
            resource_quota_present: Some(true),
            max_virtual_servers: Some(40),
            virtual_servers: Some(20),
            default_deny_ingress: Some(true),
            default_deny_egress: Some(true),
            public_ports: Some(vec![PublicPort {
                object: "Service/web".into(),
                port: 443,
                protocol: "TCP".into(),
            }]),
            public_allowed_ranges: Some(vec![]),
            user_role_bindings: Some(0),
            expired_exemptions: Some(0),
            admin_members: Some((m % 5) as i64),
            generic_admin_accounts: Some(0),
            directory_listing_truncated: Some(false),
            admin_sign_ins_24h: Some(10),
            admin_sign_ins_second_factor_24h: Some(0),
            second_factor_available: Some(false),
        };
        let mut subject = Subject::new(name.clone(), &facts);
        subject.municipalities = vec![name.clone()];
        document.subjects.push(subject);
        let realm = RealmFacts {
            directory_tls: Some(true),
            directory_certificate_verified: Some(true),
            lockout_threshold: Some(5),
            password_policies: Some(vec![format!("cn=default,ou=policies,dc={name},dc=lv")]),
            password_min_length: Some(10),
            password_character_classes: Some(4),
            directory_lockout_failures: Some(5),
            password_max_age_days: Some(90),
            password_history: Some(5),
            enabled_accounts_days_since_sign_in: Some(
                (0..ACCOUNTS_PER_REALM).map(|a| (a * 7) % 200).collect(),
            ),
            directory_accounts: Some(ACCOUNTS_PER_REALM),
            directory_listing_truncated: Some(false),
            departed_with_access: Some(0),
            sign_ins_24h: Some(900),
            failed_sign_ins_24h: Some(40),
            lockouts_24h: Some(2),
            lockouts_daily_average_7d: Some(1.5),
            unaudited_attempts_24h: Some(0),
        };
        let mut subject = Subject::new(name.clone(), &realm);
        subject.municipalities = vec![name];
        document.subjects.push(subject);
    }
    for s in 0..SERVERS {
        let municipality = format!("m{}", s % MUNICIPALITIES);
        let facts = VirtualServerFacts {
            image: Some("debian-12".into()),
            image_found: Some(true),
            image_approved: Some(true),
            image_support_days_left: Some(500),
            image_patch_age_days: Some((s % 40) as i64),
            backup_configured: Some(true),
            backup_interval_hours: Some(24),
            backup_retention: Some(7),
            last_backup_age_hours: Some((s % 36) as i64),
            externally_exposed_ports: Some(vec![443]),
        };
        let mut subject = Subject::new(format!("vs{s}"), &facts);
        subject.namespace = Some(format!("muni-{municipality}"));
        subject.municipalities = vec![municipality];
        document.subjects.push(subject);
    }
    let platform = PlatformFacts {
        audit_chain_intact: Some(true),
        audit_rows_verified: Some(1_000_000),
        audit_retention_days: Some(0),
        audit_oldest_event_age_days: Some(400),
        clock_offset_ms: Some(20),
        signing_key_age_days: Some(30),
        next_signing_key_published: Some(true),
    };
    document.subjects.push(Subject::new("novads", &platform));
    document
}
