//! Process plumbing shared by the servers: spawning with a parent-death
//! signal, stopping (signal, grace period, SIGKILL, reap), free ports,
//! instance directories, log tails and locating binaries.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use crate::error::CommandError;

/// Prefix of every directory the kit creates under the temp dir.
const DIR_PREFIX: &str = "novads-testkit-";
/// File in an instance dir naming the pid of the test process that owns it.
const OWNER_FILE: &str = "owner.pid";
/// Leftover instance dirs are removed only when their owner is gone and they
/// are at least this old (guards against pid namespaces sharing a temp dir).
const STALE_AFTER: Duration = Duration::from_secs(15 * 60);

struct SpawnRequest {
    command: Command,
    death_signal: libc::c_int,
    reply: oneshot::Sender<io::Result<Child>>,
}

static SPAWNER: Mutex<Option<mpsc::Sender<SpawnRequest>>> = Mutex::new(None);

/// Spawns a long-running server process.
///
/// The process gets `death_signal` when the test process dies without
/// running destructors (SIGKILL from a test runner timeout, `panic=abort`),
/// so servers never outlive their tests. Linux delivers the parent-death
/// signal when the *thread* that forked exits, so every server is forked by
/// one dedicated thread that lives as long as the process.
pub(crate) async fn spawn_server(
    command: Command,
    death_signal: libc::c_int,
    grace: Duration,
) -> io::Result<ServerChild> {
    let (reply, response) = oneshot::channel();
    let request = SpawnRequest {
        command,
        death_signal,
        reply,
    };
    {
        let mut guard = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            thread::Builder::new()
                .name("novads-testkit-spawner".into())
                .spawn(move || {
                    for request in rx {
                        let SpawnRequest {
                            mut command,
                            death_signal,
                            reply,
                        } = request;
                        set_parent_death_signal(&mut command, death_signal);
                        // If the requester was cancelled meanwhile, nobody
                        // owns the child: stop it right away.
                        if let Err(Ok(child)) = reply.send(command.spawn()) {
                            drop(ServerChild::new(
                                child,
                                death_signal,
                                Duration::from_secs(2),
                            ));
                        }
                    }
                })?;
            *guard = Some(tx);
        }
        let sender = guard
            .as_ref()
            .ok_or_else(|| io::Error::other("spawner thread missing"))?;
        sender
            .send(request)
            .map_err(|_| io::Error::other("spawner thread is gone"))?;
    }
    let child = response
        .await
        .map_err(|_| io::Error::other("spawner thread dropped the request"))??;
    Ok(ServerChild::new(child, death_signal, grace))
}

/// A running server process, stopped (and reaped) when dropped.
#[derive(Debug)]
pub(crate) struct ServerChild {
    child: Child,
    signal: libc::c_int,
    grace: Duration,
}

impl ServerChild {
    fn new(child: Child, signal: libc::c_int, grace: Duration) -> ServerChild {
        ServerChild {
            child,
            signal,
            grace,
        }
    }

    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        terminate(&mut self.child, self.signal, self.grace);
    }
}

#[cfg(target_os = "linux")]
fn set_parent_death_signal(command: &mut Command, signal: libc::c_int) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec. It only
    // calls prctl(2) and getppid(2), both async-signal-safe, and allocates
    // nothing (`last_os_error`/`from_raw_os_error` do not allocate). std runs
    // it after the uid/gid switch, so the signal survives that switch (a
    // credential change would otherwise clear it).
    unsafe {
        command.pre_exec(move || {
            // The cast widens a small positive signal number.
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_command: &mut Command, _signal: libc::c_int) {}

/// Stops `child`: `signal`, then up to `grace` for it to exit, then SIGKILL.
/// Always reaps the process.
pub(crate) fn terminate(child: &mut Child, signal: libc::c_int, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our
        // own child that has not been reaped, so it cannot name a recycled
        // process.
        unsafe {
            libc::kill(pid, signal);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) => thread::sleep(Duration::from_millis(2)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `n` distinct loopback ports that were free a moment ago.
pub(crate) fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    // Hold all listeners at once so the kernel hands out distinct ports.
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// A loopback TCP port that is bound but not listening: connections are
/// refused and nobody else can take the port while this is held.
#[derive(Debug)]
pub(crate) struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    port: u16,
}

impl ClosedPort {
    pub(crate) fn reserve() -> io::Result<ClosedPort> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let port = socket.local_addr()?.port();
        Ok(ClosedPort {
            _socket: socket,
            port,
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

/// Environment variable naming the directory for server instance dirs.
pub const SCRATCH_DIR_ENV: &str = "NOVADS_TESTKIT_TMPDIR";
/// Free space `/dev/shm` needs to be used for instance dirs.
const MIN_SHM_FREE: u64 = 1 << 30;

/// Where instance directories go: `$NOVADS_TESTKIT_TMPDIR`, else `/dev/shm`
/// when it is a writable tmpfs with at least 1 GiB free (server data on
/// tmpfs starts several times faster than on a virtual disk), else the temp
/// dir.
pub(crate) fn scratch_root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(dir) = std::env::var_os(SCRATCH_DIR_ENV).filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let shm = Path::new("/dev/shm");
        if shm.is_dir() && writable(shm) && free_bytes(shm).is_some_and(|b| b >= MIN_SHM_FREE) {
            return shm.to_owned();
        }
        std::env::temp_dir()
    })
    .clone()
}

fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `path` is a valid NUL-terminated string for the call.
    unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: all-zero is a valid `statvfs` (plain integers); statvfs(3)
    // fills it in.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is a valid out pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    // The field types differ between platforms; on Linux both are u64.
    #[allow(clippy::unnecessary_cast)]
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// A fresh instance directory `novads-testkit-<kind>-XXXXXX` under
/// [`scratch_root`], tagged with the owning process (leftovers of killed
/// test runs are swept once per process).
pub(crate) fn instance_dir(kind: &str) -> io::Result<tempfile::TempDir> {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let root = scratch_root();
    SWEPT.call_once(|| sweep_stale_dirs(&root));
    let dir = tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{kind}-"))
        .tempdir_in(&root)?;
    fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())?;
    Ok(dir)
}

fn sweep_stale_dirs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        if !is_ours {
            continue;
        }
        let owner_file = entry.path().join(OWNER_FILE);
        let Ok(owner) = fs::read_to_string(&owner_file) else {
            continue;
        };
        let Ok(pid) = owner.trim().parse::<libc::pid_t>() else {
            continue;
        };
        let old_enough = fs::metadata(&owner_file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age >= STALE_AFTER);
        if old_enough && !process_exists(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn process_exists(pid: libc::pid_t) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: kill(2) with signal 0 only checks for existence/permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The last `lines` lines of a log file (or why it could not be read).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Finds an executable: `$PATH` first, then `extra_dirs`.
pub(crate) fn find_executable(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Whether `path` is an executable file.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The effective uid of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// uid and gid of a local account.
pub(crate) fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: `passwd` is a plain C struct for which all-zero is a valid
    // (if meaningless) value; getpwnam_r overwrites it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call and `buf`
    // is as large as we say; the strings getpwnam_r stores in `pwd` point
    // into `buf`, and we read only the integer fields.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

/// Percent-encodes a path for an `ldapi://` URL.
pub(crate) fn percent_encode_path(path: &OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs a short-lived tool to completion, feeding `stdin`.
pub(crate) async fn run_tool(
    mut command: tokio::process::Command,
    stdin: Option<&str>,
) -> Result<String, CommandError> {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let spawn_err = |source| CommandError::Spawn {
        program: program.clone(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_err)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await.map_err(spawn_err)?;
        drop(pipe);
    }
    let output = child.wait_with_output().await.map_err(spawn_err)?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(CommandError::Failed {
            program,
            status: output.status,
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_port_refuses_connections() {
        let closed = ClosedPort::reserve().unwrap();
        let err = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, closed.port())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(3).unwrap();
        assert_ne!(ports[0], ports[1]);
        assert_ne!(ports[1], ports[2]);
    }

    #[test]
    fn ldapi_paths_are_encoded() {
        assert_eq!(
            percent_encode_path(OsStr::new("/tmp/a b/ldapi")),
            "%2Ftmp%2Fa%20b%2Fldapi"
        );
    }

    #[test]
    fn root_exists() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-novads"), None);
    }
}
