//! The `novads` binary as a user meets it: help, version, `dev`, `serve`, bad input, signals.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_novads");

fn novads() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("NOVADS_LISTEN")
        .env_remove("NOVADS_DATABASE_URL")
        .env_remove("NOVADS_CONFIG")
        .env_remove("NOVADS_DATA_DIR")
        .env_remove("RUST_BACKTRACE")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(args: &[&str]) -> Output {
    let out = novads().args(args).output().await.expect("run novads");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts a user-facing failure: non-zero exit, only `novads: error:` lines, no panic.
#[track_caller]
fn assert_clean_failure(out: &Output, expected_code: i32, fragment: &str) {
    assert_eq!(out.code, Some(expected_code), "stderr: {}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "panic: {}", out.stderr);
    assert!(
        !out.stderr.contains("backtrace"),
        "backtrace: {}",
        out.stderr
    );
    let error_lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("novads: error: "))
        .collect();
    assert!(!error_lines.is_empty(), "no error line in: {}", out.stderr);
    assert!(
        error_lines.iter().any(|l| l.contains(fragment)),
        "no error line contains {fragment:?}: {}",
        out.stderr
    );
}

#[tokio::test]
async fn help_lists_working_commands_and_version_prints() {
    let out = run(&["--help"]).await;
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("dev"));
    assert!(out.stdout.contains("serve"));
    for sub in ["dev", "serve"] {
        let out = run(&[sub, "--help"]).await;
        assert_eq!(out.code, Some(0), "{sub} --help");
        assert!(
            out.stdout.contains("Usage: novads"),
            "{sub}: {}",
            out.stdout
        );
    }
    let out = run(&["--version"]).await;
    assert_eq!(out.code, Some(0));
    assert_eq!(
        out.stdout.trim(),
        format!("novads {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn unknown_command_and_missing_arguments_fail() {
    assert_ne!(run(&["frobnicate"]).await.code, Some(0));
    let out = run(&["serve"]).await;
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("--config"), "{}", out.stderr);
}

#[tokio::test]
async fn serve_with_a_missing_config_file() {
    let out = run(&["serve", "--config", "/nonexistent/novads.yaml"]).await;
    assert_clean_failure(&out, 2, "/nonexistent/novads.yaml: cannot read file");
}

#[tokio::test]
async fn serve_reports_every_config_mistake_one_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("novads.yaml");
    std::fs::write(
        &path,
        r#"
server: { listen: "127.0.0.1:0", issuer: "http://127.0.0.1:0" }
database: "sqlite://x.db"
realms:
  - { name: talsi, ldap: { urls: ["ldap://ldap.talsi.lv"], user_base: "dc=talsi" } }
  - { name: talsi, ldap: { urls: ["ldaps://ldap.talsi.lv"], user_base: "dc=talsi" } }
trusts:
  - { trusting: talsi, trusted: riga }
"#,
    )
    .expect("write");
    let out = run(&["serve", "--config", path.to_str().expect("utf-8")]).await;
    assert_clean_failure(&out, 2, "realms[0].ldap.urls[0]");
    assert_clean_failure(&out, 2, "realms[1].name: duplicate realm");
    assert_clean_failure(&out, 2, "trusts[0].trusted: unknown realm \"riga\"");
}

#[tokio::test]
async fn serve_with_malformed_yaml_and_unknown_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "server: {listen: [").expect("write");
    let out = run(&["serve", "-c", path.to_str().expect("utf-8")]).await;
    assert_clean_failure(&out, 2, "invalid YAML");

    std::fs::write(
        &path,
        "server: { listen: \"127.0.0.1:0\", issuer: \"http://127.0.0.1\", tls: true }\ndatabase: \"sqlite://x.db\"\n",
    )
    .expect("write");
    let out = run(&["serve", "-c", path.to_str().expect("utf-8")]).await;
    assert_clean_failure(&out, 2, "server.tls: unknown key `tls`");
}

fn write_config(dir: &Path, listen: &str, database: &str) -> String {
    let kek = dir.join("kek");
    std::fs::write(
        &kek,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .expect("write key");
    let path = dir.join("novads.yaml");
    std::fs::write(
        &path,
        format!(
            "server: {{ listen: \"{listen}\", issuer: \"http://127.0.0.1:8080\", key_encryption_key_file: \"{}\" }}\ndatabase: \"{database}\"\n",
            kek.display()
        ),
    )
    .expect("write config");
    path.to_str().expect("utf-8").to_owned()
}

#[tokio::test]
async fn serve_with_an_unreachable_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Port 1 on loopback: nothing listens there.
    let config = write_config(
        dir.path(),
        "127.0.0.1:0",
        "postgres://novads@127.0.0.1:1/novads",
    );
    let out = run(&["serve", "-c", &config]).await;
    assert_clean_failure(
        &out,
        1,
        "database: cannot connect to postgres://novads@127.0.0.1:1/novads",
    );
}

#[tokio::test]
async fn serve_with_a_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}/novads.db", dir.path().display());
    let config = write_config(dir.path(), &addr, &db);
    let out = run(&["serve", "-c", &config]).await;
    assert_clean_failure(&out, 1, &format!("server.listen: cannot listen on {addr}"));
}

#[tokio::test]
async fn environment_overrides_the_database_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "127.0.0.1:0", "sqlite:///nonexistent-dir/x.db");
    let out = novads()
        .args(["serve", "-c", &config])
        .env("NOVADS_DATABASE_URL", "mysql://elsewhere/db")
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("mysql://elsewhere/db"), "{stderr}");
}

/// A running `novads` process and the base URL it printed.
struct Running {
    child: Child,
    base: String,
}

/// Starts `novads dev` on a free port and waits for its banner.
async fn start_dev(data_dir: &Path) -> Running {
    let mut child = novads()
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn novads dev");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(url) = line.trim().strip_prefix("health") {
                return url.trim().trim_end_matches("/healthz").to_owned();
            }
        }
        panic!("novads dev exited without printing its URLs");
    })
    .await
    .expect("banner within 30 s");
    Running { child, base }
}

async fn terminate(mut running: Running) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let pid = running.child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(status.success());
    let status = tokio::time::timeout(Duration::from_secs(15), running.child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    if let Some(signal) = status.signal() {
        eprintln!("novads dev was killed by signal {signal}");
    }
    status.code()
}

#[tokio::test]
async fn dev_serves_health_and_is_safe_to_run_twice() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let client = reqwest::Client::new();
    for round in 0..2 {
        let running = start_dev(&data_dir).await;
        let health = client
            .get(format!("{}/healthz", running.base))
            .send()
            .await
            .expect("healthz");
        assert_eq!(health.status(), 200, "round {round}");
        let ready = client
            .get(format!("{}/readyz", running.base))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 200, "round {round}");
        let metrics = client
            .get(format!("{}/metrics", running.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(metrics.contains("novads_build_info"));
        assert_eq!(
            terminate(running).await,
            Some(0),
            "round {round}: clean exit"
        );
    }
    assert!(data_dir.join("novads.db").exists());
}

#[tokio::test]
async fn dev_refuses_a_data_dir_that_is_a_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("occupied");
    std::fs::write(&file, "x").expect("write");
    let out = run(&[
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        file.to_str().expect("utf-8"),
    ])
    .await;
    assert_clean_failure(&out, 1, "data directory");
}

#[tokio::test]
async fn sigint_also_stops_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut running = start_dev(tmp.path()).await;
    let pid = running.child.id().expect("running").to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .expect("kill");
    let status = tokio::time::timeout(Duration::from_secs(15), running.child.wait())
        .await
        .expect("exits after SIGINT")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn logs_are_json_lines_when_not_on_a_terminal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut child = novads()
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .env_remove("NOVADS_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut base = None;
    while let Some(line) = lines.next_line().await.expect("read") {
        if let Some(url) = line.trim().strip_prefix("health") {
            base = Some(url.trim().to_owned());
            break;
        }
    }
    let health = base.expect("health URL printed");
    assert_eq!(reqwest::get(&health).await.expect("get").status(), 200);
    Command::new("kill")
        .args(["-TERM", &child.id().expect("pid").to_string()])
        .status()
        .await
        .expect("kill");
    let output = tokio::time::timeout(Duration::from_secs(15), async {
        let mut stderr = child.stderr.take().expect("stderr");
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text)
            .await
            .expect("read stderr");
        let status = child.wait().await.expect("wait");
        (status, text)
    })
    .await
    .expect("exits");
    assert_eq!(output.0.code(), Some(0));
    let mut messages = Vec::new();
    for line in output.1.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(event["level"].is_string(), "{line}");
        messages.push(event["message"].as_str().unwrap_or_default().to_owned());
    }
    assert!(messages.iter().any(|m| m == "serving"), "{messages:?}");
    assert!(
        messages.iter().any(|m| m == "shutdown complete"),
        "{messages:?}"
    );
}

#[tokio::test]
async fn keys_rotate_waits_for_the_next_key_unless_told_now() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}/novads.db", dir.path().display());
    let config = write_config(dir.path(), "127.0.0.1:0", &db);

    let out = run(&["keys", "rotate", "-c", &config]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(
        report["rotated"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    assert_eq!(
        report["postponed"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );

    let out = run(&["keys", "rotate", "-c", &config, "--now"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let rotated = report["rotated"].as_array().expect("rotated");
    assert_eq!(rotated.len(), 2, "{report}");
    let algorithms: Vec<&str> = rotated
        .iter()
        .filter_map(|r| r["algorithm"].as_str())
        .collect();
    assert!(algorithms.contains(&"ES256") && algorithms.contains(&"RS256"));

    // The wrong key encryption key is refused with a clear message, not a panic.
    std::fs::write(dir.path().join("kek"), "ff".repeat(32)).expect("other key");
    let out = run(&["keys", "rotate", "-c", &config, "--now"]).await;
    assert_clean_failure(&out, 1, "signing keys:");
}

#[tokio::test]
async fn crds_prints_the_checked_in_definitions() {
    let out = run(&["crds"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut expected = String::new();
    for name in [
        "municipalities.novads.io.yaml",
        "securityexemptions.novads.io.yaml",
        "serverimages.novads.io.yaml",
        "virtualservers.novads.io.yaml",
    ] {
        expected.push_str(
            &std::fs::read_to_string(root.join("crds").join(name)).expect("checked-in CRD"),
        );
    }
    assert_eq!(
        out.stdout, expected,
        "regenerate crds/*.yaml with NOVADS_BLESS=1"
    );
}

#[tokio::test]
async fn render_previews_a_municipality_and_refuses_garbage() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = root.join("operator/tests/fixtures/talsi.yaml");
    let out = run(&["render", "-f", fixture.to_str().expect("utf-8")]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for kind in [
        "Namespace",
        "ResourceQuota",
        "LimitRange",
        "NetworkPolicy",
        "RoleBinding",
    ] {
        assert!(
            out.stdout.contains(&format!("kind: {kind}\n")),
            "{kind}: {}",
            out.stdout
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.yaml");
    std::fs::write(
        &garbage,
        "apiVersion: novads.io/v1alpha1\nkind: Municipality\nspec: [1, 2\n",
    )
    .expect("write");
    let out = run(&["render", "-f", garbage.to_str().expect("utf-8")]).await;
    assert_clean_failure(&out, 2, "document");
    let out = run(&["render", "-f", "/nonexistent.yaml"]).await;
    assert_clean_failure(&out, 2, "/nonexistent.yaml");
}

/// The README's walkthrough: `novads render -f examples/*.yaml` (one `-f`, several files).
#[tokio::test]
async fn render_takes_the_examples_after_one_flag() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let files = [
        "municipality-talsi.yaml",
        "serverimage-debian-12.yaml",
        "virtualserver-web.yaml",
    ]
    .map(|name| root.join(name).to_str().expect("utf-8").to_string());
    let mut args = vec!["render", "-f"];
    args.extend(files.iter().map(String::as_str));
    let out = run(&args).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for kind in ["Namespace", "VirtualMachine", "Service", "Secret"] {
        assert!(
            out.stdout.contains(&format!("kind: {kind}\n")),
            "{kind}: {}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("name: web-expose"), "{}", out.stdout);
}

#[tokio::test]
async fn operator_without_a_cluster_says_why() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = novads()
        .args(["operator", "--metrics-listen", "127.0.0.1:0"])
        .env("HOME", home.path())
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l
                .starts_with("novads: error: operator: cannot configure the Kubernetes client")),
        "{stderr}"
    );
}

/// A kubeconfig whose only context points at a port nothing listens on.
fn write_kubeconfig(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(
        path,
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\n\
         contexts:\n- name: test-ctx\n  context: {cluster: test, user: test}\n\
         current-context: test-ctx\n\
         users:\n- name: test\n  user: {token: not-a-real-token}\n",
    )
    .expect("kubeconfig");
}

/// Starts `novads dev` with `extra` arguments and `HOME` set to `home`; returns the process and
/// its banner up to "Press Ctrl-C".
async fn dev_banner(home: &Path, extra: &[&str]) -> (Running, String) {
    let mut child = novads()
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(home.join("data"))
        .args(extra)
        .env("HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn novads dev");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let banner = tokio::time::timeout(Duration::from_secs(30), async {
        let mut banner = String::new();
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            banner.push_str(&line);
            banner.push('\n');
            if line.starts_with("Press Ctrl-C") {
                return banner;
            }
        }
        panic!("novads dev exited during its banner:\n{banner}");
    })
    .await
    .expect("banner within 30 s");
    let base = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("health"))
        .expect("health URL")
        .trim()
        .trim_end_matches("/healthz")
        .to_owned();
    (Running { child, base }, banner)
}

/// `~/.kube/config` may name a production cluster: `novads dev` must not touch it unless told.
#[tokio::test]
async fn dev_never_starts_the_operator_from_the_home_kubeconfig() {
    let home = tempfile::tempdir().expect("tempdir");
    write_kubeconfig(&home.path().join(".kube").join("config"));
    let (running, banner) = dev_banner(home.path(), &[]).await;
    assert!(
        banner.contains("operator        not started: no kubeconfig"),
        "{banner}"
    );
    assert_eq!(terminate(running).await, Some(0));
}

#[tokio::test]
async fn dev_runs_the_operator_against_the_named_kubeconfig_and_says_which() {
    let home = tempfile::tempdir().expect("tempdir");
    let kubeconfig = home.path().join("cluster.yaml");
    write_kubeconfig(&kubeconfig);
    let path = kubeconfig.to_str().expect("utf-8");
    let (running, banner) = dev_banner(home.path(), &["--kubeconfig", path]).await;
    let line = banner
        .lines()
        .find(|l| l.trim_start().starts_with("operator"))
        .expect("an operator line");
    assert!(
        line.contains("running against https://127.0.0.1:1")
            && line.contains("context test-ctx")
            && line.contains(path),
        "{banner}"
    );
    // An unreachable cluster does not stop the sign-in service.
    let health = reqwest::get(format!("{}/healthz", running.base))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(terminate(running).await, Some(0));
}

#[tokio::test]
async fn dev_refuses_a_kubeconfig_it_cannot_read() {
    let home = tempfile::tempdir().expect("tempdir");
    let broken = home.path().join("broken.yaml");
    std::fs::write(&broken, "clusters: [ {").expect("write");
    let data = home.path().join("data");
    let out = run(&[
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--kubeconfig",
        broken.to_str().expect("utf-8"),
    ])
    .await;
    assert_clean_failure(&out, 2, "cannot use the kubeconfig");
}

/// The value of `<input name="NAME" value="...">` in a page.
fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("field present") + marker.len();
    let end = html[start..].find('"').expect("value closed") + start;
    html[start..end].to_owned()
}

/// A login post of `request` with the CSRF pair `csrf` (cookie and field alike).
async fn post_login(base: &str, request: &str, csrf: &str) -> reqwest::Response {
    let demo = &novads_api::dev::DEMO_USERS[0];
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("request", request)
        .append_pair("csrf", csrf)
        .append_pair("username", &format!("{}@demo", demo.username))
        .append_pair("password", demo.password)
        .finish();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("{base}/oidc/login"))
        .header("cookie", format!("novads_csrf={csrf}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("login post")
}

/// The login form of the real binary under attack: the pending request travels sealed in the
/// page, and a changed value or one sealed under another key — naming the attacker's redirect
/// URI, with a CSRF pair of the attacker's own — is refused like an unknown request, with no
/// redirect anywhere; the genuine form signs in once, and its replay yields nothing.
#[tokio::test]
async fn dev_refuses_forged_and_replayed_sealed_sign_in_requests() {
    use novads_api::oidc::keys::KeyEncryptionKey;
    use novads_api::oidc::request::ValidRequest;
    use novads_api::oidc::sealed_request::{PendingRequest, RequestSealKey};

    let tmp = tempfile::tempdir().expect("tempdir");
    let running = start_dev(&tmp.path().join("data")).await;
    let base = running.base.clone();
    let redirect = format!("{base}/demo/callback");
    let authorize = format!(
        "{base}/oidc/authorize?response_type=code&client_id=demo-app&scope=openid&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    );
    let page = reqwest::get(&authorize).await.expect("authorize");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    let (request, csrf) = (hidden_field(&html, "request"), hidden_field(&html, "csrf"));

    // One character changed in the middle of the sealed value.
    let mut changed = request.clone().into_bytes();
    let middle = changed.len() / 2;
    changed[middle] = if changed[middle] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).expect("ascii");
    let response = post_login(&base, &changed, &csrf).await;
    assert_eq!(response.status(), 410);
    assert!(response.headers().get("location").is_none());

    // A request of the attacker's choosing, sealed under a key-encryption key of their own.
    let forged = ValidRequest {
        client_id: "demo-app".into(),
        redirect_uri: "https://evil.example/cb".into(),
        scope: "openid".into(),
        state: None,
        nonce: None,
        code_challenge: None,
        login_hint: None,
        prompt_none: false,
        prompt_login: false,
        max_age: None,
    };
    let now = chrono::Utc::now().timestamp_millis();
    let (forged, forged_csrf) = PendingRequest::begin(&forged, "lv", now).expect("request");
    let sealed = RequestSealKey::from_kek(&KeyEncryptionKey::from_bytes([0x42; 32]))
        .expect("key")
        .seal(&forged)
        .expect("seal");
    let response = post_login(&base, &sealed, &forged_csrf).await;
    assert_eq!(response.status(), 410);
    assert!(response.headers().get("location").is_none());

    // The genuine form signs in once; the same post again yields no second code.
    let response = post_login(&base, &request, &csrf).await;
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().expect("ascii");
    assert!(location.starts_with(&redirect), "{location}");
    let response = post_login(&base, &request, &csrf).await;
    assert_eq!(response.status(), 410, "a replayed sign-in");
    assert_eq!(terminate(running).await, Some(0));
}
