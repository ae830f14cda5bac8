//! The slapd harness against the real slapd: fixtures, overlays, ACLs, TLS,
//! outages and teardown.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};
use novads_testkit::fixtures::{policy, talsi, ventspils};
use novads_testkit::{Municipality, Slapd, SlapdOptions};

/// LDAP result code for invalidCredentials.
const INVALID_CREDENTIALS: u32 = 49;

async fn connect(url: &str, settings: LdapConnSettings) -> Result<Ldap, LdapError> {
    let (conn, ldap) = LdapConnAsync::with_settings(settings, url).await?;
    ldap3::drive!(conn);
    Ok(ldap)
}

/// Binds on a fresh connection and returns the result code (0 = success).
async fn bind_rc(slapd: &Slapd, dn: &str, password: &str) -> u32 {
    let mut ldap = connect(&slapd.url(), slapd.ldap_settings())
        .await
        .expect("connect");
    let rc = ldap.simple_bind(dn, password).await.expect("bind").rc;
    let _ = ldap.unbind().await;
    rc
}

async fn service_conn(slapd: &Slapd) -> Ldap {
    let mut ldap = connect(&slapd.url(), slapd.ldap_settings())
        .await
        .expect("connect");
    ldap.simple_bind(slapd.service_dn(), slapd.service_password())
        .await
        .expect("bind")
        .success()
        .expect("service account bind");
    ldap
}

async fn search(ldap: &mut Ldap, base: &str, filter: &str, attrs: &[&str]) -> Vec<SearchEntry> {
    let (entries, _) = ldap
        .search(base, Scope::Subtree, filter, attrs.to_vec())
        .await
        .expect("search")
        .success()
        .expect("search result");
    entries.into_iter().map(SearchEntry::construct).collect()
}

fn user_filter(m: Municipality, uid: &str) -> String {
    m.user_filter()
        .replace("{username}", &ldap3::ldap_escape(uid))
}

#[tokio::test]
async fn every_municipality_serves_its_fixture() {
    for m in Municipality::ALL {
        let Some(slapd) = Slapd::start(m).await else {
            return;
        };
        assert_eq!(slapd.suffix(), m.suffix());
        let mut ldap = service_conn(&slapd).await;
        let entries = search(
            &mut ldap,
            m.people_base(),
            "(objectClass=inetOrgPerson)",
            &["uid", "mail", "cn", "memberOf", "entryUUID"],
        )
        .await;
        let uids: BTreeSet<&str> = entries.iter().map(|e| e.attrs["uid"][0].as_str()).collect();
        let expected: BTreeSet<&str> = m.users().iter().map(|u| u.uid).collect();
        assert_eq!(uids, expected, "{m}");

        for user in m.users() {
            let entry = entries
                .iter()
                .find(|e| e.attrs["uid"][0] == user.uid)
                .expect("user entry");
            assert_eq!(entry.dn, user.dn);
            assert_eq!(entry.attrs["mail"], [user.mail]);
            assert_eq!(entry.attrs["cn"], [user.cn]);
            assert!(!entry.attrs["entryUUID"][0].is_empty());
            let member_of: BTreeSet<String> = entry
                .attrs
                .get("memberOf")
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect();
            let expected: BTreeSet<String> = user.group_dns().into_iter().collect();
            assert_eq!(member_of, expected, "memberOf of {}", user.login());

            let rc = bind_rc(&slapd, user.dn, user.password).await;
            let want = if user.locked { INVALID_CREDENTIALS } else { 0 };
            assert_eq!(rc, want, "bind as {}", user.login());
            let rc = bind_rc(&slapd, user.dn, "not-the-password").await;
            assert_eq!(
                rc,
                INVALID_CREDENTIALS,
                "wrong password for {}",
                user.login()
            );
        }

        for group in m.groups() {
            let entries = search(
                &mut ldap,
                group.dn,
                "(objectClass=groupOfNames)",
                &["member"],
            )
            .await;
            assert_eq!(entries.len(), 1, "{}", group.dn);
            assert_eq!(entries[0].attrs["member"].len(), group.members.len());
        }
        let _ = ldap.unbind().await;
    }
}

#[tokio::test]
async fn jana_has_member_of_and_can_bind() {
    let Some(slapd) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    let mut ldap = service_conn(&slapd).await;
    let filter = user_filter(Municipality::Talsi, talsi::JANA.uid);
    let entries = search(
        &mut ldap,
        Municipality::Talsi.people_base(),
        &filter,
        &["memberOf"],
    )
    .await;
    assert_eq!(entries.len(), 1);
    let mut member_of = entries[0].attrs["memberOf"].clone();
    member_of.sort();
    assert_eq!(
        member_of,
        [
            "cn=it-admins,ou=groups,dc=talsi,dc=lv",
            "cn=vpvkac-staff,ou=groups,dc=talsi,dc=lv"
        ]
    );

    // Search then bind as the user on the same connection, as novads does.
    let result = ldap
        .simple_bind(&entries[0].dn, talsi::JANA.password)
        .await
        .expect("bind");
    assert_eq!(result.rc, 0, "{result:?}");
    let result = ldap
        .simple_bind(talsi::JANA.dn, "Jana-Talsi-2024")
        .await
        .expect("bind");
    assert_eq!(result.rc, INVALID_CREDENTIALS);
    // Namesake in another realm has another password.
    assert_eq!(
        bind_rc(&slapd, talsi::JANA.dn, ventspils::JANA.password).await,
        INVALID_CREDENTIALS
    );
}

#[tokio::test]
async fn user_with_special_characters() {
    let Some(slapd) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    let user = talsi::JANIS_BERZINS;
    let mut ldap = service_conn(&slapd).await;
    let filter = user_filter(Municipality::Talsi, user.uid);
    let entries = search(
        &mut ldap,
        Municipality::Talsi.people_base(),
        &filter,
        &["cn", "memberOf"],
    )
    .await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].dn, user.dn);
    assert_eq!(entries[0].attrs["cn"], [user.cn]);
    assert_eq!(entries[0].attrs["memberOf"], user.group_dns());
    // Search by the cn itself, escaped for a filter.
    let filter = format!("(cn={})", ldap3::ldap_escape(user.cn));
    let entries = search(
        &mut ldap,
        Municipality::Talsi.people_base(),
        &filter,
        &["uid"],
    )
    .await;
    assert_eq!(entries.len(), 1);
    assert_eq!(bind_rc(&slapd, user.dn, user.password).await, 0);
    // Equivalent spelling of the DN (backslash escapes) binds as well.
    let other_spelling = r#"cn=Bērziņš\, Jānis \"JB\",ou=people,dc=talsi,dc=lv"#;
    assert_eq!(bind_rc(&slapd, other_spelling, user.password).await, 0);
}

#[tokio::test]
async fn disabled_user_cannot_bind() {
    let Some(slapd) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    let user = talsi::DISABLED;
    assert!(user.locked);
    assert_eq!(
        bind_rc(&slapd, user.dn, user.password).await,
        INVALID_CREDENTIALS
    );
    let mut ldap = service_conn(&slapd).await;
    let entries = search(
        &mut ldap,
        user.dn,
        "(objectClass=*)",
        &["pwdAccountLockedTime"],
    )
    .await;
    assert_eq!(
        entries[0].attrs["pwdAccountLockedTime"],
        [policy::ADMIN_LOCKED_TIME]
    );
}

#[tokio::test]
async fn repeated_failures_lock_the_account() {
    let Some(slapd) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    let user = talsi::LOCKOUT;
    for attempt in 1..=policy::MAX_FAILURE {
        let rc = bind_rc(&slapd, user.dn, &format!("wrong-{attempt}")).await;
        assert_eq!(rc, INVALID_CREDENTIALS);
    }
    assert_eq!(
        bind_rc(&slapd, user.dn, user.password).await,
        INVALID_CREDENTIALS,
        "the right password must fail once locked"
    );
    let mut ldap = service_conn(&slapd).await;
    let entries = search(
        &mut ldap,
        user.dn,
        "(objectClass=*)",
        &["pwdAccountLockedTime", "pwdFailureTime"],
    )
    .await;
    assert!(
        entries[0].attrs.contains_key("pwdAccountLockedTime"),
        "{:?}",
        entries[0]
    );
    // Other accounts are unaffected.
    assert_eq!(
        bind_rc(&slapd, talsi::JANA.dn, talsi::JANA.password).await,
        0
    );

    // An administrator unlocks it.
    slapd
        .ldapmodify(&format!(
            "dn: {}\nchangetype: modify\ndelete: pwdAccountLockedTime\n",
            user.dn
        ))
        .await
        .expect("unlock");
    assert_eq!(bind_rc(&slapd, user.dn, user.password).await, 0);
}

#[tokio::test]
async fn acls_limit_what_anonymous_and_users_see() {
    let Some(slapd) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    // Anonymous: nothing under the suffix.
    let mut anon = connect(&slapd.url(), slapd.ldap_settings())
        .await
        .expect("connect");
    let result = anon
        .search(slapd.suffix(), Scope::Subtree, "(uid=*)", vec!["uid"])
        .await
        .expect("search");
    assert!(result.0.is_empty(), "anonymous saw {:?}", result.0);

    // A user sees their own entry only.
    let mut user = connect(&slapd.url(), slapd.ldap_settings())
        .await
        .expect("connect");
    user.simple_bind(talsi::ILZE.dn, talsi::ILZE.password)
        .await
        .expect("bind")
        .success()
        .expect("ilze binds");
    let entries = search(
        &mut user,
        talsi::ILZE.dn,
        "(objectClass=*)",
        &["uid", "memberOf"],
    )
    .await;
    assert_eq!(entries[0].attrs["uid"], [talsi::ILZE.uid]);
    assert_eq!(entries[0].attrs["memberOf"], talsi::ILZE.group_dns());
    for base in [slapd.suffix(), talsi::JANA.dn] {
        let result = user
            .search(base, Scope::Subtree, "(uid=*)", vec!["uid"])
            .await
            .expect("search");
        assert!(result.0.is_empty(), "ilze saw entries under {base}");
    }

    // The service account reads everyone, but never a password.
    let mut svc = service_conn(&slapd).await;
    let entries = search(
        &mut svc,
        slapd.suffix(),
        "(uid=*)",
        &["uid", "userPassword"],
    )
    .await;
    assert_eq!(entries.len(), Municipality::Talsi.users().len());
    assert!(entries.iter().all(
        |e| !e.attrs.contains_key("userPassword") && !e.bin_attrs.contains_key("userPassword")
    ));

    // The rootdn does see the (hashed) password.
    let ldif = slapd
        .ldapsearch(talsi::JANA.dn, "(objectClass=*)", &["userPassword"])
        .await
        .expect("ldapsearch");
    assert!(ldif.contains("userPassword:: "), "{ldif}");
    assert!(!ldif.contains(talsi::JANA.password));
}

#[tokio::test]
async fn ldapmodify_deletes_a_leaver() {
    let Some(slapd) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    slapd
        .ldapmodify(&format!(
            "dn: {}\nchangetype: delete\n",
            talsi::JANIS_BERZINS.dn
        ))
        .await
        .expect("delete");
    let mut ldap = service_conn(&slapd).await;
    let filter = user_filter(Municipality::Talsi, talsi::JANIS_BERZINS.uid);
    assert!(
        search(&mut ldap, slapd.suffix(), &filter, &["uid"])
            .await
            .is_empty()
    );
    // memberof-refint removed the leaver from the group.
    let group = search(
        &mut ldap,
        "cn=vpvkac-staff,ou=groups,dc=talsi,dc=lv",
        "(objectClass=*)",
        &["member"],
    )
    .await;
    assert_eq!(group[0].attrs["member"], [talsi::JANA.dn]);
    assert_eq!(
        bind_rc(
            &slapd,
            talsi::JANIS_BERZINS.dn,
            talsi::JANIS_BERZINS.password
        )
        .await,
        INVALID_CREDENTIALS
    );

    // Adding entries works too, and a bad change reports slapd's error.
    slapd
        .ldapadd(
            "dn: uid=newbie,ou=people,dc=talsi,dc=lv\nobjectClass: inetOrgPerson\nuid: newbie\ncn: New Bie\nsn: Bie\nuserPassword: Newbie-1\n",
        )
        .await
        .expect("add");
    assert_eq!(
        bind_rc(&slapd, "uid=newbie,ou=people,dc=talsi,dc=lv", "Newbie-1").await,
        0
    );
    let err = slapd
        .ldapmodify("dn: uid=nobody,ou=people,dc=talsi,dc=lv\nchangetype: delete\n")
        .await
        .expect_err("deleting a missing entry fails");
    assert!(
        err.stderr().is_some_and(|s| s.contains("No such object")),
        "{err}"
    );
}

fn tls_settings(slapd: &Slapd) -> LdapConnSettings {
    let config = slapd.rustls_client_config().expect("TLS enabled");
    LdapConnSettings::new()
        .set_config(config)
        .set_conn_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn ldaps_and_starttls_with_the_generated_ca() {
    let Some(slapd) = Slapd::start_tls(Municipality::Ventspils).await else {
        return;
    };
    let ca_path = slapd.ca_pem_path().expect("CA path");
    let ca_pem = std::fs::read_to_string(ca_path).expect("read CA");
    assert_eq!(Some(ca_pem.as_str()), slapd.ca_pem());
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    // A client config built from the PEM bytes alone works the same way.
    let from_pem = novads_testkit::rustls_client_config(ca_pem.as_bytes()).expect("client config");

    let ldaps = slapd.ldaps_url().expect("ldaps url");
    assert!(ldaps.starts_with("ldaps://127.0.0.1:"));
    for settings in [
        tls_settings(&slapd),
        LdapConnSettings::new().set_config(from_pem),
    ] {
        let mut ldap = connect(&ldaps, settings).await.expect("ldaps connect");
        ldap.simple_bind(slapd.service_dn(), slapd.service_password())
            .await
            .expect("bind")
            .success()
            .expect("bind over ldaps");
        let entries = search(&mut ldap, slapd.suffix(), "(uid=peteris)", &["uid"]).await;
        assert_eq!(entries.len(), 1);
        let _ = ldap.unbind().await;
    }

    // StartTLS on the plain port.
    let mut ldap = connect(&slapd.url(), tls_settings(&slapd).set_starttls(true))
        .await
        .expect("starttls connect");
    let result = ldap
        .simple_bind(ventspils::PETERIS.dn, ventspils::PETERIS.password)
        .await
        .expect("bind");
    assert_eq!(result.rc, 0);
    let _ = ldap.unbind().await;

    // ldap_settings() carries the CA too.
    let mut ldap = connect(&slapd.url(), slapd.ldap_settings().set_starttls(true))
        .await
        .expect("starttls via ldap_settings");
    let _ = ldap.unbind().await;
}

#[tokio::test]
async fn tls_rejects_an_unknown_ca() {
    let (Some(a), Some(b)) = tokio::join!(
        Slapd::start_tls(Municipality::Talsi),
        Slapd::start_with(
            Municipality::Kuldiga,
            SlapdOptions::default().with_tls(true)
        ),
    ) else {
        return;
    };
    // b's CA does not vouch for a's certificate.
    let settings = LdapConnSettings::new().set_config(b.rustls_client_config().expect("tls"));
    let ldaps = a.ldaps_url().expect("ldaps");
    assert!(connect(&ldaps, settings.clone()).await.is_err());
    assert!(
        connect(&a.url(), settings.set_starttls(true))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn plain_instances_have_no_tls() {
    let Some(slapd) = Slapd::start(Municipality::Kuldiga).await else {
        return;
    };
    assert_eq!(slapd.ldaps_url(), None);
    assert_eq!(slapd.ca_pem_path(), None);
    assert!(slapd.rustls_client_config().is_none());
}

#[tokio::test]
async fn down_url_refuses_connections() {
    let Some(slapd) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    let down = slapd.down_url();
    assert_ne!(down, slapd.url());
    let started = Instant::now();
    let result = connect(&down, slapd.ldap_settings()).await;
    assert!(result.is_err(), "connected to {down}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused, not timed out"
    );
    // The live URL still works.
    assert_eq!(
        bind_rc(&slapd, talsi::JANA.dn, talsi::JANA.password).await,
        0
    );
}

#[tokio::test]
async fn stop_and_restart_simulate_an_outage() {
    let Some(slapd) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    let url = slapd.url();
    slapd.stop();
    assert!(!slapd.is_running());
    assert!(connect(&url, slapd.ldap_settings()).await.is_err());
    slapd.restart().await;
    assert!(slapd.is_running());
    assert_eq!(slapd.url(), url);
    assert_eq!(
        bind_rc(&slapd, talsi::JANA.dn, talsi::JANA.password).await,
        0
    );
}

fn assert_gone(port: u16, dir: &Path, pid: u32) {
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} still exists"
    );
}

#[tokio::test]
async fn drop_stops_the_server() {
    let Some(slapd) = Slapd::start_tls(Municipality::Talsi).await else {
        return;
    };
    let (port, ldaps_port) = (slapd.port(), slapd.ldaps_port().expect("tls"));
    let dir = slapd.dir().to_owned();
    let pid = slapd.pid().expect("running");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(slapd);
    assert_gone(port, &dir, pid);
    assert!(TcpStream::connect(("127.0.0.1", ldaps_port)).is_err());
}

#[tokio::test]
async fn a_panicking_test_still_stops_the_server() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let Some(slapd) = Slapd::start(Municipality::Talsi).await else {
            return;
        };
        let _ = tx.send((
            slapd.port(),
            slapd.dir().to_owned(),
            slapd.pid().expect("pid"),
        ));
        panic!("simulated test failure");
    });
    let joined = task.await;
    let Ok((port, dir, pid)) = rx.await else {
        return; // skipped: slapd not installed
    };
    assert!(joined.expect_err("task panicked").is_panic());
    assert_gone(port, &dir, pid);
}

#[tokio::test]
async fn three_directories_start_concurrently() {
    let started = Instant::now();
    let (a, b, c) = tokio::join!(
        Slapd::start(Municipality::Talsi),
        Slapd::start(Municipality::Ventspils),
        Slapd::start(Municipality::Kuldiga),
    );
    let elapsed = started.elapsed();
    let (Some(a), Some(b), Some(c)) = (a, b, c) else {
        return;
    };
    eprintln!("three slapd instances started concurrently in {elapsed:?}");
    let ports: BTreeSet<u16> = [a.port(), b.port(), c.port()].into();
    assert_eq!(ports.len(), 3);
    for slapd in [&a, &b, &c] {
        let m = slapd.municipality();
        let mut ldap = service_conn(slapd).await;
        let entries = search(
            &mut ldap,
            slapd.suffix(),
            "(objectClass=inetOrgPerson)",
            &["uid"],
        )
        .await;
        assert_eq!(entries.len(), m.users().len(), "{m}");
        // Each directory has only its own suffix.
        let other = Municipality::ALL
            .into_iter()
            .find(|o| *o != m)
            .expect("other");
        let result = ldap
            .search(other.suffix(), Scope::Base, "(objectClass=*)", vec!["dc"])
            .await
            .expect("search");
        assert!(result.0.is_empty());
    }
}

#[tokio::test]
async fn empty_directory_without_fixture() {
    let Some(slapd) = Slapd::start_with(
        Municipality::Talsi,
        SlapdOptions::default().with_fixture(false),
    )
    .await
    else {
        return;
    };
    let ldif = slapd
        .ldapsearch(slapd.suffix(), "(objectClass=*)", &["dn"])
        .await
        .unwrap_or_default();
    assert!(ldif.trim().is_empty(), "{ldif}");
    // Loading the fixture by hand gives the usual directory.
    slapd
        .ldapadd(Municipality::Talsi.ldif())
        .await
        .expect("load");
    assert_eq!(
        bind_rc(&slapd, talsi::JANA.dn, talsi::JANA.password).await,
        0
    );
}

#[tokio::test]
async fn startup_is_fast() {
    let mut times = Vec::new();
    for options in [SlapdOptions::default(), SlapdOptions::tls()] {
        for m in Municipality::ALL {
            let started = Instant::now();
            let Some(slapd) = Slapd::start_with(m, options.clone()).await else {
                return;
            };
            let total = started.elapsed();
            let stop = Instant::now();
            drop(slapd);
            times.push((m, options.tls, total, stop.elapsed()));
        }
    }
    for (m, tls, start, stop) in &times {
        eprintln!("slapd {m} tls={tls}: start+fixture {start:?}, stop {stop:?}");
    }
    for (m, tls, start, _) in times {
        assert!(
            start < Duration::from_secs(5),
            "{m} tls={tls} took {start:?}"
        );
    }
}

#[tokio::test]
#[should_panic(expected = "unknown directive <bogus-directive>")]
async fn a_failing_start_panics_with_the_log() {
    let options = SlapdOptions::default().with_extra_config("bogus-directive on");
    if Slapd::start_with(Municipality::Talsi, options)
        .await
        .is_none()
    {
        panic!("unknown directive <bogus-directive> (skipped: slapd not installed)");
    }
}

#[tokio::test]
async fn extra_config_is_applied() {
    let options = SlapdOptions::default().with_extra_config("limits * size.soft=2 size.hard=2");
    let Some(slapd) = Slapd::start_with(Municipality::Talsi, options).await else {
        return;
    };
    let mut ldap = service_conn(&slapd).await;
    let result = ldap
        .search(slapd.suffix(), Scope::Subtree, "(uid=*)", vec!["uid"])
        .await
        .expect("search");
    assert_eq!(result.1.rc, 4, "sizeLimitExceeded");
    assert_eq!(result.0.len(), 2);
}
