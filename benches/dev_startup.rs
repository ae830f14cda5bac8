//! How long `novads dev` takes from exec to a 200 on `/healthz`, on a fresh data directory
//! (creates and migrates the SQLite database) and on an existing one.
//!
//! Run: `cargo bench --bench dev_startup`. Prints figures; asserts nothing about speed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_novads");
const ROUNDS: usize = 10;

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut fresh = Vec::new();
    let mut warm = Vec::new();
    for round in 0..ROUNDS {
        let data_dir = tmp.path().join(format!("round-{round}"));
        fresh.push(time_to_healthy(&data_dir));
        warm.push(time_to_healthy(&data_dir));
    }
    report("fresh data directory", &mut fresh);
    report("existing data directory", &mut warm);
}

fn time_to_healthy(data_dir: &std::path::Path) -> Duration {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("NOVADS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn novads dev");
    let addr = health_address(&mut child);
    while !healthy(&addr) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed();
    stop(child);
    elapsed
}

fn health_address(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("stdout");
        if let Some(url) = line.trim().strip_prefix("health") {
            let url = url.trim();
            return url
                .trim_start_matches("http://")
                .trim_end_matches("/healthz")
                .to_owned();
        }
    }
    panic!("novads dev printed no health URL");
}

fn healthy(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).is_ok() && response.starts_with("HTTP/1.1 200")
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn report(label: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "novads dev start to /healthz 200, {label}: min {:.1} ms, median {:.1} ms, max {:.1} ms ({} runs)",
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}
