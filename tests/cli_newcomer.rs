//! The small commands of a newcomer's path: `novads hash-secret`, `novads config check` and
//! `novads completions`.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use argon2::{Argon2, PasswordHash, PasswordVerifier};

const BIN: &str = env!("CARGO_BIN_EXE_novads");

fn novads(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("NOVADS_CONFIG")
        .env_remove("NOVADS_DATABASE_URL")
        .env_remove("NOVADS_LISTEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run novads");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("novads output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn hash_secret_prints_an_argon2id_hash_that_verifies_the_secret() {
    for input in [
        &b"correct horse battery staple"[..],
        b"correct horse battery staple\n",
    ] {
        let out = novads(&["hash-secret"], input);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let hash = text(&out.stdout);
        let hash = hash.trim_end();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        let parsed = PasswordHash::new(hash).expect("a PHC string");
        let argon2 = Argon2::default();
        assert!(
            argon2
                .verify_password(b"correct horse battery staple", &parsed)
                .is_ok()
        );
        assert!(argon2.verify_password(b"wrong", &parsed).is_err());
    }
}

#[test]
fn hash_secret_refuses_an_empty_secret() {
    let out = novads(&["hash-secret"], b"\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("novads: error: no secret on standard input"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_hashed_secret_is_accepted_by_config_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = dir.path().join("kek");
    std::fs::write(&kek, [7u8; 32]).expect("kek");
    let hash = text(&novads(&["hash-secret"], b"s3cret").stdout);
    let config = dir.path().join("novads.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:8080\n  issuer: http://127.0.0.1:8080\n  \
             key_encryption_key_file: {}\ndatabase: sqlite://{}/novads.db\nrealms:\n  - name: talsi\n    \
             static:\n      users: []\nclients:\n  - client_id: grafana\n    realm: talsi\n    \
             redirect_uris: [\"https://grafana.talsi.example/login/generic_oauth\"]\n    \
             secret_hash: \"{}\"\n",
            kek.display(),
            dir.path().display(),
            hash.trim_end()
        ),
    )
    .expect("config");
    let path = config.to_str().expect("UTF-8 path");
    let out = novads(&["config", "check", "--config", path], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{path}: valid (1 realms, 1 clients, 0 trusts)\n")
    );
    assert!(
        !dir.path().join("novads.db").exists(),
        "config check starts nothing, not even the database"
    );
}

#[test]
fn config_check_names_every_mistake_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("novads.yaml");
    std::fs::write(
        &config,
        "server:\n  listen: 0.0.0.0:8080\n  issuer: http://sso.example.org\n  \
         key_encryption_key_file: /nonexistent/kek\ndatabase: sqlite://novads.db\n\
         trusts:\n  - { trusting: ventspils, trusted: talsi }\n",
    )
    .expect("config");
    let path = config.to_str().expect("UTF-8 path");
    let out = novads(&["config", "check", "-c", path], b"");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 3, "{stderr}");
    for line in &lines {
        assert!(
            line.starts_with(&format!("novads: error: {path}: ")),
            "{line}"
        );
    }
    for fragment in ["server.issuer", "trusts[0]", "key_encryption_key_file"] {
        assert!(
            stderr.contains(fragment),
            "no line about {fragment}: {stderr}"
        );
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef novads"),
        ("fish", "complete -c novads"),
    ] {
        let out = novads(&["completions", shell], b"");
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        for command in ["hash-secret", "config", "completions", "operator"] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
    }
    let out = novads(&["completions", "tcsh"], b"");
    assert_eq!(out.status.code(), Some(2));
}
