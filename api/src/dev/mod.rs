//! `novads dev`: everything that runs without a cluster, on embedded defaults.
//!
//! No file is needed: a data directory holds the SQLite database, and a built-in `demo` realm
//! with demo users and a demo client stands in for a municipality's directory.

pub mod demo;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{
    AdminApiConfig, AuditConfig, ClientConfig, Config, LockoutConfig, RealmConfig, ServerConfig,
    StaticDirectoryConfig, StaticUserConfig,
};

/// Where `novads dev` keeps its state unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = ".novads-dev";
/// Where `novads dev` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Name of the built-in realm.
pub const DEMO_REALM: &str = "demo";
/// Client id of the built-in demo application.
pub const DEMO_CLIENT: &str = "demo-app";

/// A demo account printed at start-up; its password is public by design.
pub struct DemoUser {
    pub username: &'static str,
    pub password: &'static str,
    pub name: &'static str,
    pub groups: &'static [&'static str],
    /// argon2id of `password`, precomputed so that start-up stays fast.
    pub password_hash: &'static str,
}

pub const DEMO_USERS: &[DemoUser] = &[
    DemoUser {
        username: "anna",
        password: "anna-demo",
        name: "Anna Ozola",
        groups: &["it-admins", "staff"],
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$8YpaIqm2JnNn1wr8LaHp9Q$4RMXTTuhAlX2GjosOfvTsrijV6vzMpG7rgMtFPqISCs",
    },
    DemoUser {
        username: "peteris",
        password: "peteris-demo",
        name: "Pēteris Kalniņš",
        groups: &["staff"],
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$X5C1drAKml2fWr4zojS71w$Nm/SprspHFUdXy7AB6Rh8zF4d0Z12skK36kLyISX1NU",
    },
];

/// Creates the data directory if needed (owner-only permissions: it will hold keys and the
/// audit trail) and returns its absolute path. Safe to call on an existing directory.
pub fn prepare_data_dir(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let dir = std::fs::canonicalize(dir)?;
    // Created once (owner-only) and reused, so signing keys survive restarts.
    crate::oidc::keys::KeyEncryptionKey::load_or_create_file(&key_encryption_key_path(&dir))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(dir)
}

/// Where `novads dev` keeps the key that encrypts its token-signing keys.
pub fn key_encryption_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("key-encryption.key")
}

/// The configuration `novads dev` runs on. `listen` is the address actually bound, so the
/// issuer is right even when port 0 was asked for.
pub fn config(data_dir: &Path, listen: SocketAddr) -> Config {
    let issuer = format!("http://{listen}");
    Config {
        server: ServerConfig {
            listen,
            issuer: issuer.clone(),
            shutdown_grace_seconds: 5,
            key_encryption_key_file: Some(key_encryption_key_path(data_dir)),
            key_encryption_key_env: None,
            trusted_proxies: vec![],
            management_listen: None,
            header_read_timeout_seconds: 10,
            max_connections: 1024,
            authorization_requests_per_minute: 120,
        },
        database: format!("sqlite://{}", data_dir.join("novads.db").display()),
        database_password_file: None,
        realms: vec![RealmConfig {
            name: DEMO_REALM.to_owned(),
            display_name: Some("Demo municipality".to_owned()),
            ldap: None,
            static_directory: Some(StaticDirectoryConfig {
                users: DEMO_USERS
                    .iter()
                    .map(|u| StaticUserConfig {
                        username: u.username.to_owned(),
                        password_hash: u.password_hash.to_owned(),
                        email: Some(format!("{}@demo.novads.lv", u.username)),
                        name: Some(u.name.to_owned()),
                        groups: u.groups.iter().map(|g| (*g).to_owned()).collect(),
                        disabled: false,
                    })
                    .collect(),
            }),
        }],
        trusts: vec![],
        clients: vec![ClientConfig {
            client_id: DEMO_CLIENT.to_owned(),
            realm: DEMO_REALM.to_owned(),
            redirect_uris: vec![format!("{issuer}/demo/callback")],
            post_logout_redirect_uris: vec![format!("{issuer}/demo/")],
            secret_hash: None,
            public: true,
            id_token_signed_response_alg: Default::default(),
        }],
        lockout: LockoutConfig::default(),
        audit: AuditConfig::default(),
        // The demo application's tokens open the admin API; the demo realm's `it-admins`
        // (anna) are platform admins.
        admin_api: AdminApiConfig {
            clients: vec![DEMO_CLIENT.to_owned()],
            platform_admin_groups: vec![format!("{DEMO_REALM}:it-admins")],
            ..AdminApiConfig::default()
        },
    }
}

/// What `novads dev` prints once it is serving.
pub fn banner(config: &Config, data_dir: &Path) -> String {
    let base = &config.server.issuer;
    let mut text = format!(
        "novads dev is running\n\
         \x20 data directory  {}\n\
         \x20 database        {}\n\
         \x20 health          {base}/healthz\n\
         \x20 readiness       {base}/readyz\n\
         \x20 metrics         {base}/metrics\n\
         \x20 OpenID Connect  {base}/.well-known/openid-configuration\n\
         \x20 demo app        {base}/demo/  (sign in there with a demo user)\n\
         \x20 demo realm      {DEMO_REALM} (built-in directory)\n",
        data_dir.display(),
        config.database,
    );
    for user in DEMO_USERS {
        text.push_str(&format!(
            "    user          {}@{DEMO_REALM} / {}  (groups: {})\n",
            user.username,
            user.password,
            user.groups.join(", ")
        ));
    }
    let admin = &DEMO_USERS[0];
    text.push_str(&format!(
        "\x20 admin API       {base}/api/v1  (docs: {base}/api/v1/docs)\n         \x20   token: sign in at {base}/demo/ as {}@{DEMO_REALM} (platform admin); the page shows an access token\n         \x20   then:  curl -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/realms\n",
        admin.username
    ));
    text
}

#[cfg(test)]
mod tests {
    use argon2::{Argon2, PasswordHash, PasswordVerifier};

    use super::*;
    use crate::config::Mode;

    #[test]
    fn dev_config_is_valid() {
        let dir = Path::new("/tmp/novads-dev-test");
        let config = config(dir, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(config.validate(Mode::Dev), vec![]);
        assert_eq!(config.server.issuer, "http://127.0.0.1:8080");
        assert_eq!(config.database, "sqlite:///tmp/novads-dev-test/novads.db");
    }

    #[test]
    fn printed_demo_passwords_match_their_hashes() {
        for user in DEMO_USERS {
            let hash = PasswordHash::new(user.password_hash).expect("PHC string");
            assert!(
                Argon2::default()
                    .verify_password(user.password.as_bytes(), &hash)
                    .is_ok(),
                "the printed password of {} does not verify",
                user.username
            );
        }
    }

    #[test]
    fn banner_lists_urls_and_credentials() {
        let config = config(Path::new("/d"), "127.0.0.1:9999".parse().expect("addr"));
        let text = banner(&config, Path::new("/d"));
        assert!(text.contains("http://127.0.0.1:9999/healthz"));
        assert!(text.contains("anna@demo / anna-demo"));
        assert!(text.contains(
            "curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:9999/api/v1/realms"
        ));
        assert!(text.contains("sign in at http://127.0.0.1:9999/demo/ as anna@demo"));
    }

    #[test]
    fn data_dir_is_idempotent_and_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("nested/data");
        let first = prepare_data_dir(&dir).expect("first");
        let second = prepare_data_dir(&dir).expect("second");
        assert_eq!(first, second);
        assert!(first.is_absolute());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }
}
