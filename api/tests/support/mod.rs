//! Starting `novads` the way `novads dev` runs it, for the HTTP-level tests.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;

use novads_api::config::Config;
use novads_api::db::Database;
use novads_api::dev;
use novads_api::federation::audit::AuditKey;
use novads_api::oidc::keys::{KeyEncryptionKey, StoredIdentityKey};
use novads_api::oidc::store::FlowStore;
use novads_api::server::{ServeError, Server};
use novads_api::state::AppState;
use novads_testkit::Postgres;
use tokio::sync::oneshot;

/// A server running on a loopback port until [`Running::stop`].
pub struct Running {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `http://127.0.0.1:PORT` of `server.management_listen`, when configured.
    pub management: Option<String>,
    pub state: AppState,
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Shuts the server down and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

/// `novads` on the dev configuration (demo realm, public client `demo-app`, the demo
/// application at `/demo/`) in a fresh data directory, after `adjust` changed the
/// configuration; `adjust` also gets the server's base URL.
pub async fn start_dev(adjust: impl FnOnce(&mut Config, &str)) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dev::prepare_data_dir(dir.path()).expect("data dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let base = format!("http://{addr}");
    let mut config: Config = dev::config(&data, addr);
    adjust(&mut config, &base);
    let server = Server::from_listener(config.clone(), listener)
        .await
        .expect("server");
    let state = server.state().clone();
    let management = server
        .management_addr()
        .expect("management address")
        .map(|addr| format!("http://{addr}"));
    let routes = novads_api::server::router_with(state.clone(), novads_api::dev::demo::routes());
    let server = server.with_router(routes);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Running {
        base,
        management,
        state,
        config,
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

/// Runs `body` on a fresh SQLite database, then on a fresh database of a throwaway PostgreSQL
/// cluster (skipped when PostgreSQL is not installed, unless `NOVADS_REQUIRE_SERVICES=1`), so
/// that every store statement is exercised on both backends. `db.backend()` names the one in
/// use for assertion messages. On PostgreSQL `db` is the application role of
/// docs/security.md: the owner role applied the migrations, and every statement runs with the
/// privileges production grants.
pub async fn each_backend<F, Fut>(body: F)
where
    F: Fn(Database) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    each_backend_with_owner(|app, _owner| body(app)).await;
}

/// Like [`each_backend`], also handing `body` the owner's connection: a database writer with
/// every privilege (on SQLite the same file, as anyone who can write it).
pub async fn each_backend_with_owner<F, Fut>(body: F)
where
    F: Fn(Database, Database) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("novads.db").display());
    let db = Database::open(&url, None).await.expect("SQLite opens");
    body(db.clone(), db.clone()).await;
    db.close().await;
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let roles = pg.fresh_database_with_roles().await;
    let owner = Database::open(&roles.owner, None)
        .await
        .expect("PostgreSQL migrates as the owner");
    let app = Database::open(&roles.app, None)
        .await
        .expect("PostgreSQL opens as the application role");
    body(app.clone(), owner.clone()).await;
    app.close().await;
    owner.close().await;
}

/// The key-encryption key of tests that build the federation by hand.
pub const TEST_KEK: [u8; 32] = [0x5a; 32];

/// A file holding [`TEST_KEK`], for `server.key_encryption_key_file`.
pub fn test_kek_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), TEST_KEK).expect("write key");
    file
}

/// The audit chain's key under [`TEST_KEK`].
pub fn audit_key() -> AuditKey {
    audit_key_of(TEST_KEK)
}

/// The audit chain's key under another key-encryption key.
pub fn audit_key_of(kek: [u8; 32]) -> AuditKey {
    AuditKey::from_kek(&KeyEncryptionKey::from_bytes(kek)).expect("audit key")
}

/// The key that authenticates stored identities under [`TEST_KEK`].
pub fn identity_key() -> StoredIdentityKey {
    StoredIdentityKey::from_kek(&KeyEncryptionKey::from_bytes(TEST_KEK)).expect("identity key")
}

/// The sign-in store of `db`, authenticating stored identities under [`TEST_KEK`].
pub fn flow_store(db: Database) -> FlowStore {
    FlowStore::new(db, identity_key())
}
