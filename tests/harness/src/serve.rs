//! Starting the real `novads serve` in tests and benchmarks: the parts of its configuration
//! that tie it to a throwaway directory, a free port, and waiting until it is ready.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::Slapd;

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Writes a key-encryption key (32 fixed bytes: the data of a throwaway test) to `dir/kek`
/// and returns its path, for `server.key_encryption_key_file`.
pub fn write_key_file(dir: &Path) -> PathBuf {
    let kek = dir.join("kek");
    std::fs::write(&kek, [7u8; 32]).expect("write the key-encryption key");
    kek
}

impl Slapd {
    /// This directory as one item of a configuration's `realms:` list (indented for a
    /// top-level `realms:` key): plain `ldap://` (`insecure: true`), the service account's
    /// password written to a file in `dir`. `ldap_extra` lines (such as `pool_size: 32`) are
    /// added to its `ldap:` map.
    pub fn realm_yaml(&self, dir: &Path, ldap_extra: &[&str]) -> String {
        let m = self.municipality();
        let secret = dir.join(format!("{}-bind-password", m.realm()));
        std::fs::write(&secret, self.service_password()).expect("write the bind password");
        let mut yaml = format!(
            "  - name: {realm}\n    ldap:\n      urls: [\"{url}\"]\n      insecure: true\n      \
             bind_dn: \"{bind_dn}\"\n      bind_password_file: \"{secret}\"\n      \
             user_base: \"{base}\"\n",
            realm = m.realm(),
            url = self.url(),
            bind_dn = m.service_dn(),
            secret = secret.display(),
            base = m.people_base(),
        );
        for line in ldap_extra {
            yaml.push_str("      ");
            yaml.push_str(line);
            yaml.push('\n');
        }
        yaml
    }
}

/// Waits until `novads serve` at `base` answers `/readyz`; panics with the end of `log` if the
/// process exits first (`exited`: its `try_wait`, from `std` or tokio) or is not ready within a
/// minute.
pub async fn wait_ready(base: &str, log: &Path, mut exited: impl FnMut() -> Option<ExitStatus>) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = exited() {
            panic!(
                "novads serve exited with {status} before it was ready:\n{}",
                log_tail(log)
            );
        }
        let ready = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "novads serve not ready after 60 s:\n{}",
            log_tail(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last 30 lines of a log file.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
