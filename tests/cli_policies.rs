//! `novads policies check` and `novads policies eval` as a user meets them: the shipped
//! policies, broken policy directories, the examples, facts documents, exemptions, `--fail-on`
//! and bad input.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_novads");

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(root())
        .env_remove("RUST_BACKTRACE")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run novads");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A user-facing failure: the exit code, only `novads: error:` lines, one containing `fragment`.
#[track_caller]
fn assert_clean_failure(out: &Output, code: i32, fragment: &str) {
    assert_eq!(out.code, Some(code), "stderr: {}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("novads: error: "))
        .collect();
    assert!(
        errors.iter().any(|l| l.contains(fragment)),
        "no error line contains {fragment:?}: {}",
        out.stderr
    );
}

fn examples() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("examples"))
        .expect("examples")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.to_str().expect("utf-8").to_string())
        .collect();
    files.sort();
    files
}

fn eval_json(extra: &[&str], stdin: Option<&str>) -> (Output, Value) {
    let mut args = vec![
        "policies",
        "eval",
        "--now",
        "2026-12-01",
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = run(&args, stdin);
    let json = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    (out, json)
}

fn result<'a>(json: &'a Value, check: &str) -> &'a Value {
    json["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["check"] == check)
        .unwrap_or_else(|| panic!("no result for {check}"))
}

#[test]
fn the_shipped_policies_check_clean() {
    let out = run(&["policies", "check"], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("36 checks, no problems"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_broken_policy_directory_lists_every_problem_with_file_line_and_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("network.yaml"),
        r#"checks:
  - id: network.default-deny
    title: {lv: Aizliegums, en: Default deny}
    remediation: {lv: Labojiet, en: Fix it}
    legalBasis: ["NIS2 Art. 21(2)(a)"]
    severity: high
    subject: Municipality
    expression: facts.default_deny == true
    message: {lv: x, en: z}
  - id: network.second
    title: {lv: Otrs, en: Second}
    remediation: {lv: Labojiet, en: Fix it}
    legalBasis: []
    severity: urgent
    subject: Municipality
    expression: "true"
    message: {lv: x, en: y}
"#,
    )
    .expect("write");
    std::fs::write(
        dir.path().join("audit.yaml"),
        "checks:\n  - id: [unclosed\n",
    )
    .expect("write");
    let path = dir.path().to_str().expect("utf-8");
    let out = run(&["policies", "check", path], None);
    assert_clean_failure(
        &out,
        1,
        &format!(
            "{path}/network.yaml:2: check network.default-deny: unknown fact `facts.default_deny`"
        ),
    );
    assert_clean_failure(
        &out,
        1,
        &format!("{path}/network.yaml:10: check network.second: "),
    );
    assert_clean_failure(
        &out,
        1,
        &format!("{path}/audit.yaml:2: invalid policy file"),
    );
    assert!(out.stdout.is_empty());

    let missing = run(&["policies", "check", "/nonexistent/policies"], None);
    assert_clean_failure(&missing, 2, "/nonexistent/policies");
}

#[test]
fn eval_on_the_examples_measures_cluster_facts_and_skips_federation_checks() {
    let files = examples();
    let mut args: Vec<&str> = vec!["-f"];
    args.extend(files.iter().map(String::as_str));
    let (out, json) = eval_json(&args, None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // The examples alone have no NetworkPolicies: nothing isolates the namespace.
    assert_eq!(result(&json, "network.default-deny")["result"], "fail");
    assert_eq!(result(&json, "image.in-support")["result"], "pass");
    assert_eq!(result(&json, "backup.configured")["result"], "pass");
    let lockout = result(&json, "auth.lockout");
    assert_eq!(lockout["result"], "skip");
    assert_eq!(
        lockout["message"],
        "federation facts not collected (no --config)"
    );
    assert_eq!(lockout["subject"]["kind"], "Realm");
    assert_eq!(lockout["municipality"], "talsi");
    assert_eq!(result(&json, "audit.chain-intact")["result"], "skip");
    let default_deny = result(&json, "network.default-deny");
    assert_eq!(default_deny["severity"], "high");
    assert_eq!(default_deny["subject"]["name"], "talsi");
    assert_eq!(default_deny["legal_basis"][0], "NIS2 Art. 21(2)(a)");
    let talsi = &json["summary"]["talsi"];
    assert!(talsi["skip"].as_u64().expect("count") > 0);
    assert!(talsi["compliance_ratio"].as_f64().is_some());

    // With what the operator renders for them, the tenancy's isolation is in place.
    let rendered = run(
        &[
            &["render", "-f"][..],
            &files.iter().map(String::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
        None,
    );
    assert_eq!(rendered.code, Some(0), "{}", rendered.stderr);
    let mut args: Vec<&str> = vec!["-f"];
    args.extend(files.iter().map(String::as_str));
    args.push("-");
    let (out, json) = eval_json(&args, Some(&rendered.stdout));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(result(&json, "network.default-deny")["result"], "pass");
    assert_eq!(result(&json, "tenancy.quota")["result"], "pass");
    assert_eq!(
        result(&json, "network.admin-ports-not-public")["result"],
        "pass"
    );

    let table = run(
        &[
            &["policies", "eval", "--lang", "lv", "-f"][..],
            &files.iter().map(String::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
        None,
    );
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert!(table.stdout.starts_with("RESULT"), "{}", table.stdout);
    assert!(table.stdout.contains("talsi: "), "{}", table.stdout);
    assert!(
        table.stdout.contains("atbalsts beidzas"),
        "Latvian messages: {}",
        table.stdout
    );
}

const FACTS: &str = r#"
sources:
  cluster: collected
  federation: collected
municipalities:
  - {name: talsi, namespace: muni-talsi}
subjects:
  - kind: Realm
    name: talsi
    municipalities: [talsi]
    facts: {lockout_threshold: 0, departed_with_access: 0}
  - kind: Realm
    name: riga
    municipalities: [talsi]
    facts: {lockout_threshold: 5}
    sources: {federation: {failed: "ldap://ldap.riga.lv: connection refused"}}
  - kind: Platform
    name: novads
    facts: {audit_chain_intact: true, audit_rows_verified: 10}
"#;

#[test]
fn eval_on_a_facts_document_and_fail_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let facts = dir.path().join("facts.yaml");
    std::fs::write(&facts, FACTS).expect("write");
    let facts = facts.to_str().expect("utf-8");
    let (out, json) = eval_json(&["--facts", facts], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let results = json["results"].as_array().expect("results");
    let of = |check: &str, realm: &str| {
        results
            .iter()
            .find(|r| r["check"] == check && r["subject"]["name"] == realm)
            .unwrap_or_else(|| panic!("{check} on {realm}"))
    };
    assert_eq!(of("auth.lockout", "talsi")["result"], "fail");
    assert_eq!(
        of("accounts.departed-with-access", "talsi")["result"],
        "pass"
    );
    // A directory that could not be read is an error, never a pass.
    let riga = of("auth.lockout", "riga");
    assert_eq!(riga["result"], "error");
    assert!(
        riga["message"]
            .as_str()
            .expect("message")
            .contains("connection refused")
    );
    // A fact the document does not hold is an error of that check only.
    assert_eq!(of("accounts.stale", "talsi")["result"], "error");
    assert_eq!(of("audit.chain-intact", "novads")["result"], "pass");

    // auth.lockout is high: --fail-on high and below exit 1, critical does not (no critical
    // failure or error: departed-with-access passes on talsi but errs on riga, whose
    // directory failed).
    let (out, _) = eval_json(&["--facts", facts, "--fail-on", "high"], None);
    assert_clean_failure(&out, 1, "results fail at severity high or higher");
    assert!(!out.stdout.is_empty(), "the evaluation is still printed");
    let mut quiet = FACTS.replace(
        "sources: {federation: {failed: \"ldap://ldap.riga.lv: connection refused\"}}",
        "",
    );
    quiet = quiet.replace("lockout_threshold: 0", "lockout_threshold: 5");
    std::fs::write(dir.path().join("quiet.yaml"), quiet).expect("write");
    let quiet = dir.path().join("quiet.yaml");
    let (out, _) = eval_json(
        &[
            "--facts",
            quiet.to_str().expect("utf-8"),
            "--fail-on",
            "critical",
        ],
        None,
    );
    assert_eq!(
        out.code,
        Some(1),
        "riga's departed-with-access has no facts: an error"
    );
    let (out, _) = eval_json(&["--facts", facts, "--fail-on", "urgent"], None);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
}

#[test]
fn exemptions_from_objects_skip_failures_and_expired_ones_are_reported() {
    let files = examples();
    let exemptions = r#"
apiVersion: novads.io/v1alpha1
kind: SecurityExemption
metadata: {name: tenancy-not-ready, namespace: muni-talsi, creationTimestamp: "2026-11-01T00:00:00Z"}
spec:
  check: tenancy.ready
  reason: the cluster is being migrated this month
  approver: anna@talsi
  expires: "2027-01-31T00:00:00Z"
---
apiVersion: novads.io/v1alpha1
kind: SecurityExemption
metadata: {name: old, namespace: muni-talsi, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  check: network.default-deny
  reason: a firewall appliance filtered this namespace
  approver: anna@talsi
  expires: "2026-06-30T00:00:00Z"
"#;
    let mut args: Vec<&str> = vec!["-f"];
    args.extend(files.iter().map(String::as_str));
    args.push("-");
    let (out, json) = eval_json(&args, Some(exemptions));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let ready = result(&json, "tenancy.ready");
    assert_eq!(ready["result"], "skip");
    assert_eq!(ready["exemption"], "tenancy-not-ready");
    assert!(
        ready["message"]
            .as_str()
            .expect("message")
            .contains("the cluster is being migrated")
    );
    assert_eq!(result(&json, "network.default-deny")["result"], "fail");
    assert_eq!(
        result(&json, "governance.exemptions-expired")["result"],
        "fail"
    );
    let states: Vec<(&str, &str)> = json["exemptions"]
        .as_array()
        .expect("exemptions")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or(""),
                e["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("tenancy-not-ready", "active"), ("old", "expired")]
    );
}

#[test]
fn bad_input_is_one_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.yaml");
    std::fs::write(&garbage, "kind: Municipality\nspec: {code: [\n").expect("write");
    let garbage = garbage.to_str().expect("utf-8");
    let out = run(&["policies", "eval", "-f", garbage], None);
    assert_clean_failure(&out, 2, "document 1: not valid YAML");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    let invalid = dir.path().join("invalid.yaml");
    std::fs::write(
        &invalid,
        "apiVersion: novads.io/v1alpha1\nkind: Municipality\nmetadata: {name: x}\nspec: {code: x}\n",
    )
    .expect("write");
    let out = run(
        &["policies", "eval", "-f", invalid.to_str().expect("utf-8")],
        None,
    );
    assert_clean_failure(&out, 2, "document 1: Municipality x: spec");

    let facts = dir.path().join("facts.json");
    std::fs::write(
        &facts,
        r#"{"subjects": [{"kind": "Realm", "name": "talsi", "facts": {"lockout": 5}}]}"#,
    )
    .expect("write");
    let out = run(
        &[
            "policies",
            "eval",
            "--facts",
            facts.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_clean_failure(&out, 2, "Realm talsi: unknown fact `lockout` for a Realm");

    let out = run(&["policies", "eval", "--facts", garbage], None);
    assert_clean_failure(&out, 2, "invalid YAML");

    let out = run(&["policies", "eval"], None);
    assert_clean_failure(&out, 2, "nothing to evaluate");

    let out = run(
        &["policies", "eval", "--facts", garbage, "--format", "pdf"],
        None,
    );
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("pdf"), "{}", out.stderr);

    let out = run(&["policies", "eval", "-f", "/nonexistent.yaml"], None);
    assert_clean_failure(&out, 2, "/nonexistent.yaml");
}

#[test]
fn eval_prints_a_printable_html_page() {
    let files = examples();
    let out = run(
        &[
            &[
                "policies",
                "eval",
                "--format",
                "html",
                "--lang",
                "lv",
                "--now",
                "2026-12-01",
                "-f",
            ][..],
            &files.iter().map(String::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("<!DOCTYPE html>"));
    assert!(out.stdout.contains("<html lang=\"lv\">"));
    assert!(out.stdout.contains("Pašvaldība talsi (muni-talsi)"));
    assert!(!out.stdout.contains("http"), "no external assets");
}

/// A configuration with one realm on a real slapd over plain `ldap://` (`insecure: true`).
fn write_federation_config(
    dir: &std::path::Path,
    ldap: &novads_testkit::Slapd,
    database: &str,
) -> PathBuf {
    let config = dir.join("novads.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
server: {{ listen: "127.0.0.1:0", issuer: "http://127.0.0.1:8080", key_encryption_key_file: "{kek}" }}
database: "{database}"
audit: {{ retention_days: 400 }}
realms:
{realm}clients:
  - {{ client_id: portal, realm: talsi, redirect_uris: ["https://portal.talsi.lv/cb"], public: true }}
"#,
            kek = novads_testkit::serve::write_key_file(dir).display(),
            realm = ldap.realm_yaml(dir, &[]),
        ),
    )
    .expect("config");
    config
}

fn result_on<'a>(json: &'a Value, check: &str, subject: &str) -> &'a Value {
    json["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["check"] == check && r["subject"]["name"] == subject)
        .unwrap_or_else(|| panic!("no result for {check} on {subject}: {json}"))
}

#[tokio::test]
async fn eval_with_config_collects_federation_facts_from_the_database_and_the_realm() {
    let Some(ldap) = novads_testkit::Slapd::start(novads_testkit::Municipality::Talsi).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let database = format!("sqlite://{}", dir.path().join("novads.db").display());
    let config = write_federation_config(dir.path(), &ldap, &database);
    let config = config.to_str().expect("utf-8");
    // A sign-in and a refusal through the real directory fill the audit trail.
    let password = format!("{}\n", novads_testkit::fixtures::talsi::JANA.password);
    let ok = run(
        &["realm", "test", "-c", config, "jana@talsi"],
        Some(&password),
    );
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
    let refused = run(
        &["realm", "test", "-c", config, "jana@talsi"],
        Some("wrong\n"),
    );
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);

    // jana and a user the directory does not know hold live sessions.
    let pool = sqlx::SqlitePool::connect(&database)
        .await
        .expect("database");
    let expires = (chrono::Utc::now() + chrono::Duration::hours(8)).timestamp_millis();
    for (hash, user) in [("h1", "jana"), ("h2", "ghost")] {
        let identity = serde_json::json!({
            "subject": format!("talsi:{user}"), "realm": "talsi", "username": format!("{user}@talsi"),
            "email": null, "name": null, "groups": [], "roles": [], "trust": null,
            "directory": null, "audit_id": 1,
        });
        sqlx::query(
            "INSERT INTO oidc_sessions (id_hash, identity, auth_time, last_seen, expires_at) \
             VALUES ($1, $2, 0, 0, $3)",
        )
        .bind(hash)
        .bind(identity.to_string())
        .bind(expires)
        .execute(&pool)
        .await
        .expect("session");
    }
    pool.close().await;

    let now = chrono::Utc::now().to_rfc3339();
    let out = run(
        &[
            "policies",
            "eval",
            "--now",
            &now,
            "--format",
            "json",
            "--config",
            config,
            "-f",
            "examples/municipality-talsi.yaml",
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let json: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let chain = result_on(&json, "audit.chain-intact", "novads");
    assert_eq!(chain["result"], "pass", "{chain}");
    assert_eq!(
        result_on(&json, "audit.retention", "novads")["result"],
        "pass"
    );
    let tls = result_on(&json, "auth.directory-tls", "talsi");
    assert_eq!(tls["result"], "fail", "{tls}");
    assert_eq!(tls["municipality"], "talsi", "{tls}");
    assert_eq!(result_on(&json, "auth.lockout", "talsi")["result"], "pass");
    // Two attempts, one failed: over the 20 % the check allows.
    assert_eq!(
        result_on(&json, "auth.failed-login-ratio", "talsi")["result"],
        "warn"
    );
    // The directory no longer knows ghost, who still holds a session.
    let departed = result_on(&json, "accounts.departed-with-access", "talsi");
    assert_eq!(departed["result"], "fail", "{departed}");
    assert!(
        departed["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("1 identities gone"),
        "{departed}"
    );
    // Every enabled account of the fresh directory was created or signed in today.
    let stale = result_on(&json, "accounts.stale", "talsi");
    assert_eq!(stale["result"], "pass", "{stale}");
    assert!(
        stale["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("4 enabled accounts; the longest without a sign-in 0 days"),
        "{stale}"
    );
    // The Municipality's adminGroups (it-admins) counted in the realm's directory: jana.
    let admins = result_on(&json, "accounts.admins-per-municipality", "talsi");
    assert_eq!(admins["result"], "pass", "{admins}");
    assert!(
        admins["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("1 people hold the admin role"),
        "{admins}"
    );
    assert_eq!(
        result_on(&json, "accounts.shared-admin", "talsi")["result"],
        "pass"
    );
    // Cluster checks still run on the objects.
    assert_eq!(
        result_on(&json, "tenancy.ready", "talsi")["subject"]["kind"],
        "Municipality"
    );
}

#[test]
fn eval_with_an_unreachable_database_gives_errors_not_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = novads_testkit::serve::write_key_file(dir.path());
    let config = dir.path().join("novads.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
server: {{ listen: "127.0.0.1:0", issuer: "http://127.0.0.1:8080", key_encryption_key_file: "{kek}" }}
database: "postgres://novads@127.0.0.1:1/novads"
realms:
  - name: talsi
    ldap:
      urls: ["ldaps://ldap.talsi.lv"]
      user_base: "ou=people,dc=talsi,dc=lv"
"#,
            kek = kek.display(),
        ),
    )
    .expect("config");
    let (out, json) = eval_json(&["--config", config.to_str().expect("utf-8")], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for (check, subject) in [
        ("audit.chain-intact", "novads"),
        ("keys.rotation", "novads"),
        ("auth.directory-tls", "talsi"),
    ] {
        let result = result_on(&json, check, subject);
        assert_eq!(result["result"], "error", "{result}");
        assert!(
            result["message"]
                .as_str()
                .unwrap_or_default()
                .contains("127.0.0.1:1"),
            "{result}"
        );
    }
    assert_eq!(json["platform"]["pass"], 0, "{json}");
}
