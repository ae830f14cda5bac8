//! A throwaway slapd with the Talsi fixture directory and `bench1` … `benchN` (password
//! `Bench-{n}-Talsi!`), the same users `cargo bench --bench oidc_login` creates, kept running
//! until Ctrl-C so that several providers (novads serve, LemonLDAP::NG, ...) can be pointed at
//! the same directory and measured side by side with `oidc-load`. See docs/benchmarks.md.
//!
//! Run: `cargo run -p novads-oidc-load --example bench_directory -- [USERS]` (default 100).

use std::fmt::Write as _;

use novads_testkit::{Municipality, Slapd};

#[tokio::main]
async fn main() {
    let count: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let m = Municipality::Talsi;
    let Some(ldap) = Slapd::start(m).await else {
        eprintln!("slapd is not installed (apt-get install slapd ldap-utils)");
        std::process::exit(2);
    };
    let mut ldif = String::new();
    for n in 1..=count {
        let _ = write!(
            ldif,
            "dn: uid=bench{n},{people}\nobjectClass: inetOrgPerson\nuid: bench{n}\n\
             cn: Bench User {n}\nsn: User {n}\nmail: bench{n}@talsi.lv\n\
             userPassword: Bench-{n}-Talsi!\n\n",
            people = m.people_base()
        );
    }
    if let Err(e) = ldap.ldapadd(&ldif).await {
        eprintln!("adding the bench users failed: {e}");
        std::process::exit(1);
    }
    println!("url            {}", ldap.url());
    println!("bind_dn        {}", ldap.service_dn());
    println!("bind_password  {}", ldap.service_password());
    println!("user_base      {}", m.people_base());
    println!("users          bench1 … bench{count}, password Bench-{{n}}-Talsi!");
    println!("Press Ctrl-C to stop (the directory is deleted).");
    let _ = tokio::signal::ctrl_c().await;
}
