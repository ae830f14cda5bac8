//! A throwaway OpenLDAP `slapd` loaded with a municipality's fixture.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::CommandError;
use crate::fixtures::Municipality;
use crate::process::{self, ClosedPort, ServerChild};
use crate::skip;

const INSTALL_HINT: &str = "apt-get install slapd ldap-utils";
/// How long slapd may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long slapd gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Start attempts when another process takes a chosen port first.
const PORT_ATTEMPTS: usize = 5;
/// Debug level passed to `slapd -d` unless `NOVADS_SLAPD_DEBUG` says
/// otherwise: `none` prints only messages logged regardless of level (errors).
const DEFAULT_DEBUG: &str = "none";
/// Environment variable overriding the `slapd -d` level (e.g. `stats`).
pub const SLAPD_DEBUG_ENV: &str = "NOVADS_SLAPD_DEBUG";

const SCHEMA_DIRS: &[&str] = &[
    "/etc/ldap/schema",
    "/etc/openldap/schema",
    "/usr/local/etc/openldap/schema",
];
const MODULE_DIRS: &[&str] = &[
    "/usr/lib/ldap",
    "/usr/lib/openldap",
    "/usr/lib64/openldap",
    "/usr/libexec/openldap",
    "/usr/local/libexec/openldap",
];
const SCHEMAS: &[&str] = &["core", "cosine", "inetorgperson", "nis"];
const MODULES: &[&str] = &["back_mdb", "memberof", "ppolicy"];

/// How to start a [`Slapd`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlapdOptions {
    /// Generate a CA and a server certificate and listen on `ldaps://` too
    /// (the `ldap://` port then also offers StartTLS). Default: off.
    pub tls: bool,
    /// Load the municipality's fixture LDIF after start. Default: on.
    pub load_fixture: bool,
    /// Extra slapd.conf lines appended after the database and overlay
    /// sections (e.g. `sizelimit 2`, more `access` rules or overlays).
    pub extra_config: String,
}

impl Default for SlapdOptions {
    fn default() -> Self {
        SlapdOptions {
            tls: false,
            load_fixture: true,
            extra_config: String::new(),
        }
    }
}

impl SlapdOptions {
    /// Options with TLS enabled (and the fixture loaded).
    pub fn tls() -> Self {
        SlapdOptions {
            tls: true,
            ..Self::default()
        }
    }

    /// Sets whether to enable TLS.
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Sets whether to load the fixture LDIF.
    pub fn with_fixture(mut self, load: bool) -> Self {
        self.load_fixture = load;
        self
    }

    /// Appends lines to the generated slapd.conf (see
    /// [`SlapdOptions::extra_config`]).
    pub fn with_extra_config(mut self, lines: &str) -> Self {
        self.extra_config.push_str(lines);
        self.extra_config.push('\n');
        self
    }
}

/// The binaries and data files slapd needs.
#[derive(Debug, Clone)]
struct Tools {
    slapd: PathBuf,
    ldapmodify: PathBuf,
    ldapsearch: PathBuf,
    schema_dir: PathBuf,
    /// `None` when the backends and overlays are built into slapd.
    module_dir: Option<PathBuf>,
}

impl Tools {
    fn find() -> Result<Tools, String> {
        let slapd = process::find_executable(
            "slapd",
            &[
                "/usr/sbin",
                "/usr/local/sbin",
                "/usr/libexec",
                "/usr/local/libexec",
            ],
        )
        .ok_or("slapd not found (looked in PATH, /usr/sbin, /usr/local/sbin)")?;
        let tool = |name: &str| {
            process::find_executable(name, &["/usr/bin", "/usr/local/bin"])
                .ok_or(format!("{name} not found in PATH"))
        };
        let ldapmodify = tool("ldapmodify")?;
        let ldapsearch = tool("ldapsearch")?;
        tool("ldapadd")?;
        let schema_dir = SCHEMA_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("core.schema").is_file())
            .ok_or(format!(
                "OpenLDAP schema files not found (looked in {})",
                SCHEMA_DIRS.join(", ")
            ))?;
        let module_dir = MODULE_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("back_mdb.la").is_file() || d.join("back_mdb.so").is_file());
        Ok(Tools {
            slapd,
            ldapmodify,
            ldapsearch,
            schema_dir,
            module_dir,
        })
    }
}

#[derive(Debug)]
struct TlsFiles {
    ca_pem: String,
    ca_path: PathBuf,
    client_config: Arc<rustls::ClientConfig>,
}

/// Why a start attempt failed.
enum StartFailure {
    /// Another process bound one of our ports first: try other ports.
    PortTaken,
    /// A real failure, with an explanation.
    Failed(String),
}

/// A throwaway OpenLDAP `slapd`: its own temp dir, config, mdb database
/// and loopback ports, loaded with a municipality's fixture.
///
/// The process is stopped (SIGTERM, then SIGKILL) and the directory removed
/// when the value is dropped, including on panic. Should the test process die
/// without unwinding, slapd gets SIGTERM from the kernel (parent-death
/// signal).
///
/// The directory has the memberof overlay (`groupOfNames`/`member` →
/// `memberOf`) and the ppolicy overlay (default policy
/// [`policy`](crate::fixtures::policy), `ppolicy_use_lockout`, cleartext
/// passwords hashed on add). ACLs: the service account reads everything,
/// users read their own entry, anonymous may only bind (plus the root DSE and
/// subschema); nobody but the rootdn reads `userPassword`.
///
/// ```no_run
/// # async fn example() {
/// use novads_testkit::{Municipality, Slapd};
/// let Some(ldap) = Slapd::start(Municipality::Talsi).await else { return };
/// let url = ldap.url(); // ldap://127.0.0.1:PORT
/// # }
/// ```
#[derive(Debug)]
pub struct Slapd {
    // Declared first so that it is dropped (process stopped) before `dir`.
    child: Mutex<Option<ServerChild>>,
    municipality: Municipality,
    port: u16,
    ldaps_port: Option<u16>,
    down: ClosedPort,
    ldapi_path: PathBuf,
    root_password: String,
    root_password_file: PathBuf,
    tls: Option<TlsFiles>,
    args: Vec<OsString>,
    tools: Tools,
    log_path: PathBuf,
    startup: Duration,
    dir: tempfile::TempDir,
}

impl Slapd {
    /// Starts slapd for `municipality` with the fixture loaded, without TLS.
    ///
    /// Returns `None` (after printing `skipped: ...`) when slapd or the
    /// ldap-utils are not installed, unless `NOVADS_REQUIRE_SERVICES=1`, in
    /// which case it panics. Panics with slapd's log when slapd is installed
    /// but fails to start.
    pub async fn start(municipality: Municipality) -> Option<Slapd> {
        Self::start_with(municipality, SlapdOptions::default()).await
    }

    /// Starts slapd with TLS: `ldaps://` plus StartTLS on `ldap://`.
    /// See [`Slapd::start`].
    pub async fn start_tls(municipality: Municipality) -> Option<Slapd> {
        Self::start_with(municipality, SlapdOptions::tls()).await
    }

    /// Starts slapd with explicit options. See [`Slapd::start`].
    pub async fn start_with(municipality: Municipality, options: SlapdOptions) -> Option<Slapd> {
        let tools = match Tools::find() {
            Ok(tools) => tools,
            Err(reason) => return skip::unavailable(&reason, INSTALL_HINT),
        };
        match Self::launch(municipality, &options, tools).await {
            Ok(slapd) => Some(slapd),
            Err(message) => {
                panic!("novads-testkit: slapd for {municipality} failed to start: {message}")
            }
        }
    }

    async fn launch(
        municipality: Municipality,
        options: &SlapdOptions,
        tools: Tools,
    ) -> Result<Slapd, String> {
        let started = Instant::now();
        let dir = process::instance_dir("slapd").map_err(|e| format!("temp dir: {e}"))?;
        let path = dir.path().to_owned();
        let io_err = |what: &str, e: io::Error| format!("{what}: {e}");

        fs::create_dir(path.join("db")).map_err(|e| io_err("creating db dir", e))?;
        let root_password = random_token();
        let root_password_file = path.join("rootpw");
        // ldapmodify -y sends the file verbatim: no trailing newline.
        fs::write(&root_password_file, &root_password)
            .map_err(|e| io_err("writing root password", e))?;

        let tls = if options.tls {
            let material = crate::tls::generate(&format!("novads-testkit {municipality} CA"))
                .map_err(|e| format!("generating certificates: {e}"))?;
            let ca_path = path.join("ca.pem");
            fs::write(&ca_path, &material.ca_pem).map_err(|e| io_err("writing CA", e))?;
            fs::write(path.join("server.pem"), &material.cert_pem)
                .map_err(|e| io_err("writing certificate", e))?;
            fs::write(path.join("server.key"), &material.key_pem)
                .map_err(|e| io_err("writing key", e))?;
            let client_config = crate::tls::client_config(material.ca_pem.as_bytes())
                .map_err(|e| format!("building the rustls client config: {e}"))?;
            Some(TlsFiles {
                ca_pem: material.ca_pem,
                ca_path,
                client_config,
            })
        } else {
            None
        };

        let conf_path = path.join("slapd.conf");
        fs::write(
            &conf_path,
            slapd_conf(municipality, &path, &tools, &root_password, tls.is_some())
                + &options.extra_config,
        )
        .map_err(|e| io_err("writing slapd.conf", e))?;

        let down = ClosedPort::reserve().map_err(|e| io_err("reserving a closed port", e))?;
        let ldapi_path = path.join("ldapi");
        let log_path = path.join("slapd.log");

        let mut attempt = 0;
        let (child, port, ldaps_port, args) = loop {
            attempt += 1;
            let ports = process::free_ports(if tls.is_some() { 2 } else { 1 })
                .map_err(|e| io_err("finding free ports", e))?;
            // free_ports(n) returns exactly n ports.
            let port = ports[0];
            let ldaps_port = ports.get(1).copied();
            let mut urls = format!("ldap://127.0.0.1:{port}/");
            if let Some(p) = ldaps_port {
                let _ = write!(urls, " ldaps://127.0.0.1:{p}/");
            }
            let _ = write!(
                urls,
                " ldapi://{}/",
                process::percent_encode_path(ldapi_path.as_os_str())
            );
            let args: Vec<OsString> = vec![
                "-f".into(),
                conf_path.clone().into(),
                "-h".into(),
                urls.into(),
                "-d".into(),
                std::env::var_os(SLAPD_DEBUG_ENV).unwrap_or_else(|| DEFAULT_DEBUG.into()),
            ];
            let _ = fs::remove_file(&ldapi_path);
            match spawn_and_wait(&tools, &args, &ldapi_path, &log_path).await {
                Ok(child) => break (child, port, ldaps_port, args),
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

        let mut slapd = Slapd {
            child: Mutex::new(Some(child)),
            municipality,
            port,
            ldaps_port,
            down,
            ldapi_path,
            root_password,
            root_password_file,
            tls,
            args,
            tools,
            log_path,
            startup: Duration::ZERO,
            dir,
        };
        if options.load_fixture {
            slapd.ldapadd(municipality.ldif()).await.map_err(|e| {
                format!(
                    "loading the {municipality} fixture failed: {e}\nslapd log:\n{}",
                    slapd.log_tail()
                )
            })?;
        }
        if !slapd.is_running() {
            return Err(format!(
                "slapd exited right after start; log:\n{}",
                slapd.log_tail()
            ));
        }
        slapd.startup = started.elapsed();
        Ok(slapd)
    }

    /// The fixture municipality this directory serves.
    pub fn municipality(&self) -> Municipality {
        self.municipality
    }

    /// `ldap://127.0.0.1:PORT` (plain LDAP; StartTLS-capable when started
    /// with TLS).
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The `ldap://` port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ldaps://127.0.0.1:PORT` when started with TLS.
    pub fn ldaps_url(&self) -> Option<String> {
        self.ldaps_port.map(|p| format!("ldaps://127.0.0.1:{p}"))
    }

    /// The `ldaps://` port when started with TLS.
    pub fn ldaps_port(&self) -> Option<u16> {
        self.ldaps_port
    }

    /// `ldap://127.0.0.1:PORT` of a port where nothing listens (connections
    /// are refused), reserved for this instance's lifetime: a "first URL is
    /// down" for failover tests.
    pub fn down_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.down.port())
    }

    /// The port behind [`Slapd::down_url`], for building `ldaps://` variants.
    pub fn down_port(&self) -> u16 {
        self.down.port()
    }

    /// `ldapi://` URL of the instance's Unix socket.
    pub fn ldapi_url(&self) -> String {
        format!(
            "ldapi://{}",
            process::percent_encode_path(self.ldapi_path.as_os_str())
        )
    }

    /// Directory suffix, e.g. `dc=talsi,dc=lv`.
    pub fn suffix(&self) -> &'static str {
        self.municipality.suffix()
    }

    /// The rootdn (`cn=admin,<suffix>`): bypasses ACLs and password policy.
    pub fn root_dn(&self) -> String {
        format!("cn=admin,{}", self.suffix())
    }

    /// The rootdn's password (random per instance).
    pub fn root_password(&self) -> &str {
        &self.root_password
    }

    /// DN of the novads service account.
    pub fn service_dn(&self) -> &'static str {
        self.municipality.service_dn()
    }

    /// Password of the novads service account.
    pub fn service_password(&self) -> &'static str {
        self.municipality.service_password()
    }

    /// Path of the CA certificate (PEM) when started with TLS: the realm's
    /// `ca_file`.
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_path.as_path())
    }

    /// The CA certificate (PEM) when started with TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// A rustls client config (aws-lc-rs) trusting only this instance's CA,
    /// when started with TLS.
    pub fn rustls_client_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.as_ref().map(|t| Arc::clone(&t.client_config))
    }

    /// ldap3 connection settings for this instance: a 5 s connect timeout
    /// and, when started with TLS, the rustls config trusting its CA. Add
    /// `.set_starttls(true)` for StartTLS on [`Slapd::url`].
    pub fn ldap_settings(&self) -> ldap3::LdapConnSettings {
        let settings = ldap3::LdapConnSettings::new().set_conn_timeout(Duration::from_secs(5));
        match self.rustls_client_config() {
            Some(config) => settings.set_config(config),
            None => settings,
        }
    }

    /// The instance directory (config, database, certificates, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything slapd wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        process::log_tail(&self.log_path, 30)
    }

    /// How long [`Slapd::start`] took, fixture load included.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Whether the slapd process is running.
    pub fn is_running(&self) -> bool {
        let mut guard = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_mut().is_some_and(|c| c.exited().is_none())
    }

    /// The slapd process id while running.
    pub fn pid(&self) -> Option<u32> {
        let guard = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().map(ServerChild::id)
    }

    /// Stops slapd now (SIGTERM, SIGKILL after 2 s), keeping its data and
    /// ports: simulates a directory outage. [`Slapd::restart`] brings it back.
    pub fn stop(&self) {
        let child = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(child);
    }

    /// Starts slapd again on the same ports with the same data (stopping it
    /// first if it runs). Panics with the log if it does not come back.
    pub async fn restart(&self) {
        self.stop();
        let _ = fs::remove_file(&self.ldapi_path);
        match spawn_and_wait(&self.tools, &self.args, &self.ldapi_path, &self.log_path).await {
            Ok(child) => {
                *self.child.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
            }
            Err(StartFailure::PortTaken) => panic!(
                "novads-testkit: slapd for {} could not restart: its port was taken meanwhile; log:\n{}",
                self.municipality,
                self.log_tail()
            ),
            Err(StartFailure::Failed(message)) => panic!(
                "novads-testkit: slapd for {} could not restart: {message}",
                self.municipality
            ),
        }
    }

    /// Applies LDIF change records (`changetype: modify|add|delete|modrdn`)
    /// as the rootdn with `ldapmodify`, e.g. to delete a leaver.
    pub async fn ldapmodify(&self, ldif: &str) -> Result<(), CommandError> {
        self.ldap_tool(&self.tools.ldapmodify, &[], Some(ldif))
            .await
            .map(drop)
    }

    /// Adds LDIF entries (no `changetype` needed) as the rootdn
    /// (`ldapmodify -a`).
    pub async fn ldapadd(&self, ldif: &str) -> Result<(), CommandError> {
        self.ldap_tool(&self.tools.ldapmodify, &["-a"], Some(ldif))
            .await
            .map(drop)
    }

    /// Searches as the rootdn (subtree, operational attributes included when
    /// `attrs` names them or contains `+`) and returns the LDIF text
    /// (`-LLL`, unwrapped).
    pub async fn ldapsearch(
        &self,
        base: &str,
        filter: &str,
        attrs: &[&str],
    ) -> Result<String, CommandError> {
        let mut args = vec!["-LLL", "-o", "ldif_wrap=no", "-b", base, filter];
        args.extend_from_slice(attrs);
        self.ldap_tool(&self.tools.ldapsearch, &args, None).await
    }

    async fn ldap_tool(
        &self,
        program: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, CommandError> {
        let mut command = tokio::process::Command::new(program);
        command
            .arg("-x")
            .arg("-H")
            .arg(self.ldapi_url())
            .arg("-D")
            .arg(self.root_dn())
            .arg("-y")
            .arg(&self.root_password_file)
            .args(args)
            // Ignore ldap.conf / .ldaprc of the machine and the user.
            .env("LDAPNOINIT", "1")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        process::run_tool(command, stdin).await
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        // Stop the process before the directory (a later field) is removed.
        self.stop();
    }
}

/// Spawns slapd and waits until it accepts connections on its ldapi socket
/// (all listeners are bound and listening by then).
async fn spawn_and_wait(
    tools: &Tools,
    args: &[OsString],
    ldapi_path: &Path,
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
    let mut command = Command::new(&tools.slapd);
    command
        .args(args)
        .env("LDAPNOINIT", "1")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let mut child = process::spawn_server(command, libc::SIGTERM, STOP_GRACE)
        .await
        .map_err(|e| StartFailure::Failed(format!("cannot run {}: {e}", tools.slapd.display())))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.exited() {
            let tail = process::log_tail(log_path, 30);
            return Err(if tail.contains("Address already in use") {
                StartFailure::PortTaken
            } else {
                StartFailure::Failed(format!("slapd exited ({status}); log:\n{tail}"))
            });
        }
        if std::os::unix::net::UnixStream::connect(ldapi_path).is_ok() {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            return Err(StartFailure::Failed(format!(
                "slapd did not accept connections within {START_TIMEOUT:?}; log:\n{}",
                process::log_tail(log_path, 30)
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The slapd.conf of one instance.
fn slapd_conf(
    municipality: Municipality,
    dir: &Path,
    tools: &Tools,
    root_password: &str,
    tls: bool,
) -> String {
    let suffix = municipality.suffix();
    let service = municipality.service_dn();
    let d = dir.display();
    let mut conf = format!("# slapd.conf generated by novads-testkit for {municipality}\n");
    for schema in SCHEMAS {
        let _ = writeln!(
            conf,
            "include \"{}\"",
            tools.schema_dir.join(format!("{schema}.schema")).display()
        );
    }
    if let Some(module_dir) = &tools.module_dir {
        let _ = writeln!(conf, "modulepath \"{}\"", module_dir.display());
        for module in MODULES {
            let present = ["la", "so"]
                .iter()
                .any(|ext| module_dir.join(format!("{module}.{ext}")).is_file());
            if present {
                let _ = writeln!(conf, "moduleload {module}");
            }
        }
    }
    let _ = writeln!(conf, "pidfile \"{d}/slapd.pid\"");
    let _ = writeln!(conf, "argsfile \"{d}/slapd.args\"");
    let _ = writeln!(conf, "loglevel none");
    if tls {
        let _ = writeln!(conf, "TLSCACertificateFile \"{d}/ca.pem\"");
        let _ = writeln!(conf, "TLSCertificateFile \"{d}/server.pem\"");
        let _ = writeln!(conf, "TLSCertificateKeyFile \"{d}/server.key\"");
        let _ = writeln!(conf, "TLSVerifyClient never");
    }
    let _ = write!(
        conf,
        r#"
database mdb
suffix "{suffix}"
rootdn "cn=admin,{suffix}"
rootpw "{root_password}"
directory "{d}/db"
maxsize 1073741824
dbnosync
index objectClass eq
index uid,mail,cn eq
index member eq

# Anonymous: bind only (plus root DSE and schema discovery). Users: bind,
# read their own entry. The novads service account: read everything except
# passwords. The rootdn bypasses all of this.
access to dn.base=""
    by * read
access to dn.base="cn=Subschema"
    by * read
access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by dn.exact="{service}" read
    by self read
    by * none

overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE

overlay ppolicy
ppolicy_default "{policy}"
ppolicy_use_lockout
ppolicy_hash_cleartext
"#,
        policy = municipality.policy_dn(),
    );
    conf
}

/// 128 random bits as hex (per-instance passwords).
fn random_token() -> String {
    let mut out = String::with_capacity(32);
    for _ in 0..2 {
        // Each RandomState is seeded from the OS RNG (per thread, then
        // incremented), so the hash of nothing is a fresh random value.
        let value = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let _ = write!(out, "{value:016x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ() {
        let a = random_token();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_token());
    }
}
