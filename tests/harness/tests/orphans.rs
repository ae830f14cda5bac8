//! Servers die with their test process even when it is SIGKILLed (no
//! destructors run): the kit sets a parent-death signal on them.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use novads_testkit::{Municipality, Postgres, Slapd};

const CHILD_ENV: &str = "NOVADS_TESTKIT_ORPHAN_CHILD";

/// The process `servers_die_with_a_killed_test_process` kills: starts servers, reports them,
/// then waits to be killed. Not a test of its own, hence ignored; that test runs it with
/// `--ignored` in a child process.
#[tokio::test]
#[ignore = "a helper process: run by servers_die_with_a_killed_test_process"]
async fn orphan_helper() {
    assert!(
        std::env::var_os(CHILD_ENV).is_some(),
        "orphan_helper only runs as the child of servers_die_with_a_killed_test_process"
    );
    let (Some(slapd), Some(pg)) = (
        Slapd::start(Municipality::Talsi).await,
        Postgres::start().await,
    ) else {
        println!("SKIPPED");
        return;
    };
    println!(
        "SERVERS {} {} {} {} {} {}",
        slapd.pid().expect("slapd pid"),
        slapd.port(),
        pg.pid().expect("postgres pid"),
        pg.port(),
        slapd.dir().display(),
        pg.socket_dir().display(),
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// Whether a process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesised command name.
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|s| s != "Z" && s != "X")
        })
        .unwrap_or(false)
}

#[test]
fn servers_die_with_a_killed_test_process() {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "orphan_helper",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("re-run the test binary");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints "test orphan_helper ... " before the output.
            for marker in ["SERVERS", "SKIPPED"] {
                if let Some(at) = line.find(marker) {
                    let _ = tx.send(line[at..].to_owned());
                    return;
                }
            }
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the helper did not report its servers: {e}");
        }
    };
    if line == "SKIPPED" {
        let _ = child.kill();
        let _ = child.wait();
        return;
    }
    let fields: Vec<&str> = line.split_whitespace().skip(1).collect();
    let [slapd_pid, slapd_port, pg_pid, pg_port, slapd_dir, pg_dir] = fields[..] else {
        panic!("bad line {line}");
    };
    let number = |s: &str| -> u32 { s.parse().expect("number") };
    let (slapd_pid, slapd_port, pg_pid, pg_port) = (
        number(slapd_pid),
        number(slapd_port),
        number(pg_pid),
        number(pg_port),
    );
    assert!(alive(slapd_pid) && alive(pg_pid));

    child.kill().expect("SIGKILL the helper");
    child.wait().expect("reap the helper");

    let deadline = Instant::now() + Duration::from_secs(10);
    while (alive(slapd_pid) || alive(pg_pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !alive(slapd_pid),
        "slapd {slapd_pid} outlived its test process"
    );
    assert!(
        !alive(pg_pid),
        "postgres {pg_pid} outlived its test process"
    );
    for port in [slapd_port, pg_port] {
        let port = u16::try_from(port).expect("port");
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "{port} accepts"
        );
    }
    // Nothing removes the directories of a SIGKILLed process (a later run
    // sweeps them after 15 minutes); tidy up now.
    for dir in [slapd_dir, pg_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
