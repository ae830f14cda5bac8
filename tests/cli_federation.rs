//! `novads realm test` and `novads audit export|verify` against a real slapd directory, as an
//! admin wiring a new municipality and an auditor checking the trail would run them.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use novads_api::federation::audit::{AuditKey, ChainHead};
use novads_api::oidc::keys::KeyEncryptionKey;
use novads_testkit::fixtures::talsi;
use novads_testkit::{Municipality, Slapd};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_novads");

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn novads(args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("NOVADS_CONFIG")
        .env_remove("NOVADS_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let out = child.wait_with_output().await.expect("wait");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A production-style configuration: LDAPS with the realm's CA, password in a file.
fn write_config(dir: &Path, ldap: &Slapd) -> PathBuf {
    let secret = dir.join("talsi-bind-password");
    std::fs::write(&secret, format!("{}\n", ldap.service_password())).expect("secret");
    let kek = dir.join("kek");
    std::fs::write(&kek, [7u8; 32]).expect("key");
    let m = Municipality::Talsi;
    let config = dir.join("novads.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
server: {{ listen: "127.0.0.1:0", issuer: "http://127.0.0.1:8080", key_encryption_key_file: "{kek}" }}
database: "sqlite://{db}"
realms:
  - name: talsi
    ldap:
      urls: ["{url}"]
      ca_file: "{ca}"
      bind_dn: "{bind_dn}"
      bind_password_file: "{secret}"
      user_base: "{base}"
clients:
  - {{ client_id: portal, realm: talsi, redirect_uris: ["https://portal.talsi.lv/cb"], public: true }}
"#,
            db = dir.join("novads.db").display(),
            kek = kek.display(),
            url = ldap.ldaps_url().expect("TLS instance"),
            ca = ldap.ca_pem_path().expect("CA").display(),
            bind_dn = m.service_dn(),
            secret = secret.display(),
            base = m.people_base(),
        ),
    )
    .expect("config");
    config
}

#[tokio::test]
async fn realm_test_then_export_and_verify_the_trail() {
    let Some(ldap) = Slapd::start_tls(Municipality::Talsi).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &ldap);
    let config = config.to_str().expect("utf-8");

    let ok = novads(
        &[
            "realm",
            "test",
            "-c",
            config,
            "jana@talsi",
            "--client",
            "portal",
        ],
        &format!("{}\n", talsi::JANA.password),
    )
    .await;
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
    let report: serde_json::Value = serde_json::from_str(&ok.stdout).expect("JSON report");
    assert_eq!(report["result"], "signed_in");
    assert_eq!(report["username"], "jana@talsi");
    assert_eq!(
        report["groups"],
        serde_json::json!(["talsi:it-admins", "talsi:vpvkac-staff"])
    );
    assert_eq!(report["audit_id"], 1);

    let refused = novads(&["realm", "test", "-c", config, "jana@talsi"], "wrong\n").await;
    assert_eq!(refused.code, Some(1));
    let report: serde_json::Value = serde_json::from_str(&refused.stdout).expect("JSON report");
    assert_eq!(report["result"], "refused");
    assert_eq!(report["reason"], "bad_credentials");
    assert!(
        refused
            .stderr
            .contains("novads: error: jana@talsi was refused: bad_credentials")
    );

    let csv = novads(&["audit", "export", "-c", config, "--format", "csv"], "").await;
    assert_eq!(csv.code, Some(0), "{}", csv.stderr);
    let lines: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", csv.stdout);
    assert!(lines[0].starts_with("id,at,event,realm,username"));
    assert!(lines[1].contains("login_succeeded") && lines[1].contains("portal"));
    assert!(lines[2].contains("login_failed") && lines[2].contains("bad_credentials"));

    let jsonl = novads(
        &[
            "audit",
            "export",
            "-c",
            config,
            "--since",
            "2000-01-01",
            "--realm",
            "talsi",
        ],
        "",
    )
    .await;
    assert_eq!(jsonl.stdout.lines().count(), 2);
    let none = novads(
        &["audit", "export", "-c", config, "--until", "2000-01-01"],
        "",
    )
    .await;
    assert_eq!((none.code, none.stdout.as_str()), (Some(0), ""));
    let bad = novads(&["audit", "export", "-c", config, "--since", "soon"], "").await;
    assert_eq!(bad.code, Some(2));

    let verify = novads(&["audit", "verify", "-c", config], "").await;
    assert_eq!(verify.code, Some(0), "{}", verify.stderr);
    let mut lines = verify.stdout.lines();
    assert_eq!(lines.next(), Some("audit trail intact: 2 rows verified"));
    let head = lines
        .next()
        .and_then(|line| line.strip_prefix("head: "))
        .expect("the head is printed")
        .to_owned();
    assert!(head.starts_with("2:"), "{head}");
    let expecting = novads(
        &["audit", "verify", "-c", config, "--expect-head", &head],
        "",
    )
    .await;
    assert_eq!(expecting.code, Some(0), "{}", expecting.stderr);
    let malformed = novads(&["audit", "verify", "-c", config, "--expect-head", "2"], "").await;
    assert_eq!(malformed.code, Some(2), "{}", malformed.stderr);

    // The server logs the same head at start, signed with the audit key.
    let logged = logged_head(config).await;
    assert_eq!(logged["head"], head.as_str(), "{logged}");
    let at = logged["at"].as_str().expect("at");
    let mac = logged["mac"].as_str().expect("mac");
    let parsed: ChainHead = head.parse().expect("head parses");
    let key = AuditKey::from_kek(&KeyEncryptionKey::from_bytes([7u8; 32])).expect("key");
    assert!(parsed.record_is_authentic(&key, at, mac), "{logged}");
    let other = AuditKey::from_kek(&KeyEncryptionKey::from_bytes([8u8; 32])).expect("key");
    assert!(!parsed.record_is_authentic(&other, at, mac));

    // The trail is cut back to row 1 behind novads's back: it is intact by itself, but not
    // against the head recorded before.
    {
        let db = sqlx::SqlitePool::connect(&format!("sqlite://{}/novads.db", dir.path().display()))
            .await
            .expect("open the database behind novads's back");
        for sql in [
            "DROP TRIGGER audit_events_no_delete",
            "DELETE FROM audit_events WHERE id = 2",
            "UPDATE audit_chain_head SET last_id = 1, \
             last_hash = (SELECT hash FROM audit_events WHERE id = 1)",
        ] {
            sqlx::query(sql).execute(&db).await.expect(sql);
        }
        db.close().await;
    }
    let cut = novads(&["audit", "verify", "-c", config], "").await;
    assert_eq!(cut.code, Some(0), "{}", cut.stderr);
    let cut = novads(
        &["audit", "verify", "-c", config, "--expect-head", &head],
        "",
    )
    .await;
    assert_eq!(cut.code, Some(1));
    assert!(
        cut.stderr.contains(
            "audit trail broken at row 1: the trail ends at row 1, before the expected head, row 2"
        ),
        "{}",
        cut.stderr
    );

    // Someone edits row 1 directly in the database file.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}/novads.db", dir.path().display()))
        .await
        .expect("open the database behind novads's back");
    sqlx::query("DROP TRIGGER audit_events_no_update")
        .execute(&db)
        .await
        .expect("drop trigger");
    sqlx::query("UPDATE audit_events SET event = 'login_failed' WHERE id = 1")
        .execute(&db)
        .await
        .expect("tamper");
    db.close().await;
    let verify = novads(&["audit", "verify", "-c", config], "").await;
    assert_eq!(verify.code, Some(1));
    assert!(
        verify.stderr.contains(
            "novads: error: audit trail broken at row 1: content does not match its hash"
        ),
        "{}",
        verify.stderr
    );
}

/// Starts `novads serve` on `config` until it logs its first audit head record, and returns
/// that record.
async fn logged_head(config: &str) -> serde_json::Value {
    use tokio::io::AsyncBufReadExt;
    let mut child = Command::new(BIN)
        .args(["serve", "-c", config])
        .env_remove("NOVADS_DATABASE_URL")
        .env("NOVADS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let found = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let fields = if event["fields"].is_object() {
                event["fields"].clone()
            } else {
                event
            };
            if fields["message"] == "audit chain head" {
                return Some(fields);
            }
        }
        None
    })
    .await
    .expect("a head record within 30 s")
    .expect("the server logged a head record");
    let _ = child.kill().await;
    found
}

/// A user name typed by an attacker lands in the audit trail; opened from a CSV export in a
/// spreadsheet it must stay text, never run as a formula.
#[tokio::test]
async fn csv_export_neutralises_formulas_typed_as_user_names() {
    let Some(ldap) = Slapd::start_tls(Municipality::Talsi).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &ldap);
    let config = config.to_str().expect("utf-8");
    for hostile in [
        "=cmd|' /c calc'!a0@talsi",
        "+1+1@talsi",
        "-2+3@talsi",
        "@sum(1)@talsi",
    ] {
        let refused = novads(
            &["realm", "test", "-c", config, "--", hostile],
            "whatever\n",
        )
        .await;
        assert_eq!(refused.code, Some(1), "{hostile}: {}", refused.stderr);
    }

    let csv = novads(&["audit", "export", "-c", config, "--format", "csv"], "").await;
    assert_eq!(csv.code, Some(0), "{}", csv.stderr);
    // No cell here holds a comma or a quote, so splitting on commas reads the CSV exactly.
    let usernames: Vec<&str> = csv
        .stdout
        .lines()
        .skip(1)
        .map(|line| line.split(',').nth(4).expect("username column"))
        .collect();
    assert_eq!(
        usernames,
        [
            "'=cmd|' /c calc'!a0@talsi",
            "'+1+1@talsi",
            "'-2+3@talsi",
            "'@sum(1)@talsi"
        ]
    );

    // JSON lines keep the exact text: they are read by programs, not spreadsheets.
    let jsonl = novads(&["audit", "export", "-c", config], "").await;
    let first: serde_json::Value =
        serde_json::from_str(jsonl.stdout.lines().next().expect("a row")).expect("JSON");
    assert_eq!(first["username"], "=cmd|' /c calc'!a0@talsi");
}
