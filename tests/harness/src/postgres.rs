//! A throwaway PostgreSQL cluster.

use std::collections::hash_map::DefaultHasher;
use std::ffi::OsString;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::CommandError;
use crate::process::{self, ServerChild};
use crate::skip;

const INSTALL_HINT: &str = "apt-get install postgresql";
/// Environment variable naming the directory with `initdb`, `postgres` and
/// `psql`, overriding the search.
pub const PG_BINDIR_ENV: &str = "NOVADS_PG_BINDIR";
/// How long the postmaster may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the postmaster gets after SIGQUIT (immediate shutdown).
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Start attempts when another process takes a chosen port first.
const PORT_ATTEMPTS: usize = 5;
/// Bump when the template's initdb options change.
const TEMPLATE_FORMAT: u32 = 1;
/// Settings for a disposable cluster: loopback only, no fsync. Commits
/// still reach the kernel before they return (`synchronous_commit` stays
/// on), so [`Postgres::stop`] (immediate shutdown) and
/// [`Postgres::restart`] keep committed data.
const SERVER_SETTINGS: &[&str] = &[
    "listen_addresses=127.0.0.1",
    "fsync=off",
    "full_page_writes=off",
    "max_connections=100",
    "shared_buffers=32MB",
    "logging_collector=off",
    "log_checkpoints=off",
];

/// The PostgreSQL binaries and who runs them.
#[derive(Debug, Clone)]
struct Tools {
    bindir: PathBuf,
    initdb: PathBuf,
    postgres: PathBuf,
    psql: PathBuf,
    /// uid/gid to run the server as (the `postgres` account when we are
    /// root: initdb and postgres refuse to run as root).
    run_as: Option<(u32, u32)>,
}

impl Tools {
    fn find() -> Result<Tools, String> {
        let bindir = find_bindir().ok_or_else(|| match std::env::var_os(PG_BINDIR_ENV) {
            Some(dir) => format!(
                "{PG_BINDIR_ENV}={} has no initdb and postgres",
                Path::new(&dir).display()
            ),
            None => "PostgreSQL server binaries (initdb, postgres) not found \
                     (looked in PATH, /usr/lib/postgresql/*/bin, /usr/local/pgsql/bin)"
                .to_owned(),
        })?;
        let psql = Some(bindir.join("psql"))
            .filter(|p| process::is_executable(p))
            .or_else(|| process::find_executable("psql", &[]))
            .ok_or("psql not found")?;
        let run_as = if process::euid() == 0 {
            Some(process::lookup_user("postgres").ok_or(
                "running as root, and there is no `postgres` account to run PostgreSQL as",
            )?)
        } else {
            None
        };
        Ok(Tools {
            initdb: bindir.join("initdb"),
            postgres: bindir.join("postgres"),
            bindir,
            psql,
            run_as,
        })
    }

    /// Gives `path` to the account that runs the server.
    fn chown(&self, path: &Path) -> io::Result<()> {
        match self.run_as {
            Some((uid, gid)) => std::os::unix::fs::lchown(path, Some(uid), Some(gid)),
            None => Ok(()),
        }
    }
}

fn find_bindir() -> Option<PathBuf> {
    let has_server = |dir: &Path| {
        process::is_executable(&dir.join("initdb")) && process::is_executable(&dir.join("postgres"))
    };
    if let Some(dir) = std::env::var_os(PG_BINDIR_ENV) {
        return Some(PathBuf::from(dir)).filter(|d| has_server(d));
    }
    // initdb in PATH is often a symlink into the versioned directory.
    if let Some(dir) = process::find_executable("initdb", &[])
        .and_then(|p| fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_owned))
        .filter(|d| has_server(d))
    {
        return Some(dir);
    }
    // Debian/Ubuntu: /usr/lib/postgresql/<major>/bin, newest first.
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    versioned
        .into_iter()
        .map(|(_, dir)| dir)
        .chain(["/usr/local/pgsql/bin", "/usr/bin"].map(PathBuf::from))
        .find(|d| has_server(d))
}

/// Why a start attempt failed.
enum StartFailure {
    PortTaken,
    Failed(String),
}

/// URLs of one database for its two roles (see
/// [`Postgres::create_database_with_roles`]).
#[derive(Debug, Clone)]
pub struct DatabaseRoles {
    /// The owner: applies migrations, owns the tables.
    pub owner: String,
    /// The application: what `novads serve` connects as.
    pub app: String,
}

/// A throwaway PostgreSQL cluster on a free loopback port, trust
/// authentication, superuser `postgres`, no durability (`fsync=off`).
///
/// Clusters are copied from a template made once per machine with `initdb`
/// (cached in the temp dir), so a start costs a file copy plus server start.
/// When the tests run as root, the server runs as the `postgres` account.
///
/// Dropping the value stops the server (SIGQUIT = immediate shutdown, then
/// SIGKILL) and removes its directory, including on panic. Should the test
/// process die without unwinding, the kernel sends the postmaster SIGQUIT
/// (parent-death signal).
///
/// ```no_run
/// # async fn example() {
/// use novads_testkit::Postgres;
/// let Some(pg) = Postgres::start().await else { return };
/// let url = pg.create_database("audit").await; // postgres://postgres@127.0.0.1:PORT/audit
/// # }
/// ```
#[derive(Debug)]
pub struct Postgres {
    // Declared first so that it is dropped (server stopped) before `dir`.
    child: Mutex<Option<ServerChild>>,
    port: u16,
    major_version: u32,
    args: Vec<OsString>,
    tools: Tools,
    next_database: AtomicU32,
    startup: Duration,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Starts a fresh cluster.
    ///
    /// Returns `None` (after printing `skipped: ...`) when PostgreSQL is not
    /// installed, unless `NOVADS_REQUIRE_SERVICES=1`, in which case it
    /// panics. Panics with the server log when PostgreSQL is installed but
    /// fails to start.
    pub async fn start() -> Option<Postgres> {
        let tools = match Tools::find() {
            Ok(tools) => tools,
            Err(reason) => return skip::unavailable(&reason, INSTALL_HINT),
        };
        match Self::launch(tools).await {
            Ok(pg) => Some(pg),
            Err(message) => panic!("novads-testkit: PostgreSQL failed to start: {message}"),
        }
    }

    async fn launch(tools: Tools) -> Result<Postgres, String> {
        let started = Instant::now();
        let template = template(&tools).await?;
        let dir = process::instance_dir("pg").map_err(|e| format!("temp dir: {e}"))?;
        let path = dir.path().to_owned();
        let data = path.join("data");
        {
            let tools = tools.clone();
            let data = data.clone();
            let source = template.clone();
            tokio::task::spawn_blocking(move || {
                copy_tree(&source, &data, &tools)?;
                // The socket goes into the instance dir.
                tools.chown(data.parent().unwrap_or(&data))
            })
            .await
            .map_err(|e| format!("copying the template: {e}"))?
            .map_err(|e| format!("copying the template {}: {e}", template.display()))?;
        }
        let major_version = fs::read_to_string(data.join("PG_VERSION"))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);

        let log_path = path.join("postgres.log");
        let mut attempt = 0;
        let (child, port, args) = loop {
            attempt += 1;
            // free_ports(1) returns exactly one port.
            let port = process::free_ports(1).map_err(|e| format!("finding a free port: {e}"))?[0];
            let mut args: Vec<OsString> = vec![
                "-D".into(),
                data.clone().into(),
                "-p".into(),
                port.to_string().into(),
                "-k".into(),
                path.clone().into(),
            ];
            for setting in SERVER_SETTINGS {
                args.push("-c".into());
                args.push(setting.into());
            }
            match spawn_and_wait(&tools, &args, &path, &log_path).await {
                Ok(child) => break (child, port, args),
                Err(StartFailure::PortTaken) if attempt < PORT_ATTEMPTS => continue,
                Err(StartFailure::PortTaken) => {
                    return Err(format!(
                        "ports kept being taken by other processes ({attempt} attempts); log:\n{}",
                        process::log_tail(&log_path, 30)
                    ));
                }
                Err(StartFailure::Failed(message)) => return Err(message),
            }
        };
        Ok(Postgres {
            child: Mutex::new(Some(child)),
            port,
            major_version,
            args,
            tools,
            next_database: AtomicU32::new(1),
            startup: started.elapsed(),
            dir,
        })
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// `postgres://postgres@127.0.0.1:PORT/<name>`.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The TCP port (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's Unix socket (`.s.PGSQL.PORT`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Major version of the server (e.g. 15).
    pub fn major_version(&self) -> u32 {
        self.major_version
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// How long [`Postgres::start`] took.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Creates database `name` (letters, digits, `_`, at most 63 bytes) and
    /// returns its URL. Panics if the name is invalid, already taken, or the
    /// server does not answer.
    pub async fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "novads-testkit: invalid database name {name:?} (use [A-Za-z0-9_], at most 63 bytes)"
        );
        // FILE_COPY (PostgreSQL 15+) is faster than WAL_LOG with fsync off.
        let strategy = if self.major_version >= 15 {
            " STRATEGY = FILE_COPY"
        } else {
            ""
        };
        let sql = format!("CREATE DATABASE \"{name}\"{strategy}");
        if let Err(e) = self.psql("postgres", &sql).await {
            panic!(
                "novads-testkit: creating database {name} failed: {e}\nserver log:\n{}",
                process::log_tail(&self.log_path(), 20)
            );
        }
        self.database_url(name)
    }

    /// Creates database `name` the way docs/security.md asks production to:
    /// owned by role `<name>_owner`, which applies the migrations and owns
    /// every table, and used by role `<name>_app`, which the server connects
    /// as and which gets only `USAGE` on the schema and, through default
    /// privileges, `SELECT, INSERT, UPDATE, DELETE` on the owner's tables and
    /// `USAGE, SELECT, UPDATE` on its sequences (the migrations take more away
    /// from it on the audit tables). Panics like [`Postgres::create_database`].
    pub async fn create_database_with_roles(&self, name: &str) -> DatabaseRoles {
        let owner = format!("{name}_owner");
        let app = format!("{name}_app");
        for (database, sql) in [
            (
                "postgres".to_owned(),
                format!("CREATE ROLE \"{owner}\" LOGIN; CREATE ROLE \"{app}\" LOGIN"),
            ),
            (
                "postgres".to_owned(),
                format!("CREATE DATABASE \"{name}\" OWNER \"{owner}\""),
            ),
            (
                name.to_owned(),
                format!(
                    "ALTER SCHEMA public OWNER TO \"{owner}\"; \
                     REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
                     GRANT USAGE ON SCHEMA public TO \"{app}\"; \
                     ALTER DEFAULT PRIVILEGES FOR ROLE \"{owner}\" IN SCHEMA public \
                     GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO \"{app}\"; \
                     ALTER DEFAULT PRIVILEGES FOR ROLE \"{owner}\" IN SCHEMA public \
                     GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO \"{app}\""
                ),
            ),
        ] {
            if let Err(e) = self.psql(&database, &sql).await {
                panic!(
                    "novads-testkit: creating database {name} with roles failed: {e}\nserver log:\n{}",
                    process::log_tail(&self.log_path(), 20)
                );
            }
        }
        DatabaseRoles {
            owner: format!("postgres://{owner}@127.0.0.1:{}/{name}", self.port),
            app: format!("postgres://{app}@127.0.0.1:{}/{name}", self.port),
        }
    }

    /// Creates a database with a fresh name (`test_1`, `test_2`, ...) and
    /// returns its URL.
    pub async fn fresh_database(&self) -> String {
        let n = self.next_database.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("test_{n}")).await
    }

    /// [`Postgres::create_database_with_roles`] with a fresh name.
    pub async fn fresh_database_with_roles(&self) -> DatabaseRoles {
        let n = self.next_database.fetch_add(1, Ordering::Relaxed);
        self.create_database_with_roles(&format!("test_{n}")).await
    }

    /// Runs SQL with `psql` as `postgres` in `database` and returns the
    /// unaligned, tuples-only output (`psql -At`).
    pub async fn psql(&self, database: &str, sql: &str) -> Result<String, CommandError> {
        let mut command = tokio::process::Command::new(&self.tools.psql);
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", database, "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        process::run_tool(command, None).await
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        let mut guard = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_mut().is_some_and(|c| c.exited().is_none())
    }

    /// The postmaster's process id while running.
    pub fn pid(&self) -> Option<u32> {
        let guard = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().map(ServerChild::id)
    }

    /// Stops the server now (immediate shutdown), keeping its data and port:
    /// simulates a database outage. [`Postgres::restart`] brings it back.
    pub fn stop(&self) {
        let child = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(child);
    }

    /// Starts the server again on the same port with the same data (stopping
    /// it first if it runs). Panics with the log if it does not come back.
    pub async fn restart(&self) {
        self.stop();
        // The postmaster is reaped, so a leftover pid file is stale.
        let _ = fs::remove_file(self.data_dir().join("postmaster.pid"));
        match spawn_and_wait(&self.tools, &self.args, self.dir.path(), &self.log_path()).await {
            Ok(child) => {
                *self.child.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
            }
            Err(StartFailure::PortTaken) => panic!(
                "novads-testkit: PostgreSQL could not restart: its port was taken meanwhile; log:\n{}",
                process::log_tail(&self.log_path(), 30)
            ),
            Err(StartFailure::Failed(message)) => {
                panic!("novads-testkit: PostgreSQL could not restart: {message}")
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Stop the server before the directory (a later field) is removed.
        self.stop();
    }
}

/// Spawns the postmaster and waits until `postmaster.pid` says `ready`.
async fn spawn_and_wait(
    tools: &Tools,
    args: &[OsString],
    dir: &Path,
    log_path: &Path,
) -> Result<ServerChild, StartFailure> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| StartFailure::Failed(format!("opening {}: {e}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(|e| StartFailure::Failed(format!("duplicating the log handle: {e}")))?;
    let mut command = Command::new(&tools.postgres);
    command
        .args(args)
        .current_dir(dir)
        .env_remove("PGDATA")
        .env_remove("PGPORT")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    if let Some((uid, gid)) = tools.run_as {
        use std::os::unix::process::CommandExt;
        command.uid(uid).gid(gid);
    }
    let mut child = process::spawn_server(command, libc::SIGQUIT, STOP_GRACE)
        .await
        .map_err(|e| {
            StartFailure::Failed(format!("cannot run {}: {e}", tools.postgres.display()))
        })?;
    let pid_file = dir.join("data").join("postmaster.pid");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.exited() {
            let tail = process::log_tail(log_path, 30);
            return Err(
                if tail.contains("could not bind") || tail.contains("Address already in use") {
                    StartFailure::PortTaken
                } else {
                    StartFailure::Failed(format!("postgres exited ({status}); log:\n{tail}"))
                },
            );
        }
        // Line 8 of postmaster.pid is the postmaster status (PostgreSQL 10+),
        // what `pg_ctl start -w` waits for.
        let ready = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.lines().nth(7).map(|s| s.trim() == "ready"))
            .unwrap_or(false);
        if ready {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            return Err(StartFailure::Failed(format!(
                "postgres was not ready within {START_TIMEOUT:?}; log:\n{}",
                process::log_tail(log_path, 30)
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The data directory of a cluster made by `initdb` once per machine (per
/// binaries and user), shared read-only by every test.
async fn template(tools: &Tools) -> Result<PathBuf, String> {
    let mut hasher = DefaultHasher::new();
    TEMPLATE_FORMAT.hash(&mut hasher);
    tools.bindir.hash(&mut hasher);
    tools.run_as.hash(&mut hasher);
    process::euid().hash(&mut hasher);
    if let Ok(meta) = fs::metadata(&tools.postgres) {
        (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino()).hash(&mut hasher);
    }
    let root = std::env::temp_dir().join(format!(
        "novads-testkit-pgtemplate-{:016x}",
        hasher.finish()
    ));
    let data = root.join("data");
    // Only trust a template made by us (or the account we run the server
    // as): the temp dir is shared with other users.
    let trusted_owners = [Some(process::euid()), tools.run_as.map(|(uid, _)| uid)];
    let complete = |data: &Path| {
        data.join("PG_VERSION").is_file()
            && fs::symlink_metadata(data)
                .is_ok_and(|m| m.is_dir() && trusted_owners.contains(&Some(m.uid())))
    };
    if complete(&data) {
        return Ok(data);
    }

    // One initdb at a time per machine: the others wait and reuse its result.
    let lock_path = root.with_extension("lock");
    let lock = tokio::task::spawn_blocking(move || -> io::Result<fs::File> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(|e| format!("locking the template: {e}"))?
    .map_err(|e| format!("locking the template: {e}"))?;
    if complete(&data) {
        return Ok(data);
    }
    if root.exists() {
        fs::remove_dir_all(&root).map_err(|e| format!("removing a broken template: {e}"))?;
    }

    let staging = tempfile::Builder::new()
        .prefix("novads-testkit-pgtemplate-staging-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    tools
        .chown(staging.path())
        .map_err(|e| format!("chown {}: {e}", staging.path().display()))?;
    let mut initdb = tokio::process::Command::new(&tools.initdb);
    initdb
        .arg("-D")
        .arg(staging.path().join("data"))
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
            // 1 MiB WAL segments instead of 16: less to copy per cluster.
            "--wal-segsize=1",
        ])
        .current_dir(staging.path())
        .env_remove("PGDATA")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some((uid, gid)) = tools.run_as {
        initdb.uid(uid).gid(gid);
    }
    let output = initdb
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", tools.initdb.display()))?;
    if !output.status.success() {
        return Err(format!(
            "initdb failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    fs::rename(staging.path(), &root).map_err(|e| format!("publishing the template: {e}"))?;
    // Renamed away: nothing left for the TempDir guard to delete.
    let _ = staging.keep();
    drop(lock);
    Ok(data)
}

/// Copies a directory tree, giving everything to the server's account and
/// keeping permission bits (PostgreSQL insists on a 0700/0750 data dir).
fn copy_tree(from: &Path, to: &Path, tools: &Tools) -> io::Result<()> {
    fs::create_dir(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&source, &target, tools)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&source)?, &target)?;
            tools.chown(&target)?;
        } else {
            fs::copy(&source, &target)?;
            tools.chown(&target)?;
        }
    }
    let mode = fs::metadata(from)?.permissions().mode();
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    tools.chown(to)
}
