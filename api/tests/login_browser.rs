//! The login page and the demo application in a real browser: Debian's headless Chromium,
//! driven by `tests/browser_login.py` (Selenium), against a novads built as `novads dev` builds
//! it. Screenshots are kept in `target/test-artifacts/` for a person to look at.

use std::path::{Path, PathBuf};
use std::time::Duration;

use novads_api::dev;

mod support;
use support::{Running, start_dev};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL_HINT: &str = "scripts/install-deps, or apt-get install chromium chromium-driver \
                            && python3 -m pip install selenium";
/// A public client of the test's own whose redirect URI is a page of novads that answers 200,
/// so the browser's landing there is clean (the demo's own callback refuses a flow it did not
/// start).
const TEST_CLIENT: &str = "browser-test";
/// The screenshots the script must leave behind.
const SCREENSHOTS: [&str; 4] = [
    "login-en.png",
    "login-lv.png",
    "login-error.png",
    "demo-signed-in.png",
];

/// `novads` as `novads dev` runs it (demo realm, demo application), plus [`TEST_CLIENT`].
async fn start() -> Running {
    start_dev(|config, base| {
        // Copied from the demo client, so it stays a valid public client whatever fields are
        // added.
        let mut client = config
            .clients
            .iter()
            .find(|c| c.client_id == dev::DEMO_CLIENT)
            .expect("demo client")
            .clone();
        client.client_id = TEST_CLIENT.into();
        client.redirect_uris = vec![format!("{base}/demo/")];
        config.clients.push(client);
    })
    .await
}

/// What is missing for the browser test, if anything.
fn missing_browser() -> Option<String> {
    let mut missing = Vec::new();
    for binary in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(binary).is_file() {
            missing.push(binary.to_owned());
        }
    }
    let selenium = std::process::Command::new("python3")
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !selenium {
        missing.push("the Python package selenium".to_owned());
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// `target/test-artifacts`, under `CARGO_TARGET_DIR` when it is set (a relative one is taken
/// from the workspace root, where cargo is run).
fn artifacts_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .map_or_else(|| workspace.join("target"), |dir| workspace.join(dir));
    target.join("test-artifacts")
}

/// Width and height of a PNG file, checking its signature and header chunk.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    let header = bytes.get(..24)?;
    if &header[..8] != SIGNATURE || &header[12..16] != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(header[16..20].try_into().ok()?);
    let height = u32::from_be_bytes(header[20..24].try_into().ok()?);
    Some((width, height))
}

#[tokio::test]
async fn the_login_page_and_the_demo_sign_in_work_in_headless_chromium() {
    if let Some(missing) = missing_browser() {
        assert!(
            !novads_testkit::services_required(),
            "the browser test needs {missing} (NOVADS_REQUIRE_SERVICES=1); install: {INSTALL_HINT}"
        );
        eprintln!("skipped: the browser test needs {missing} (install: {INSTALL_HINT})");
        return;
    }
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    // Left-overs of an earlier run must not pass for this run's screenshots.
    for name in SCREENSHOTS.iter().chain(&["failure.png"]) {
        let _ = std::fs::remove_file(artifacts.join(name));
    }

    let server = start().await;
    let demo = &dev::DEMO_USERS[0];
    let username = format!("{}@{}", demo.username, dev::DEMO_REALM);
    let redirect = format!("{}/demo/", server.base);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser_login.py");
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            server.base.as_str(),
            TEST_CLIENT,
            redirect.as_str(),
            username.as_str(),
            demo.password,
        ])
        .arg(&artifacts)
        // Debian's chromedriver is named explicitly; offline, Selenium could never fetch one.
        .env("SE_OFFLINE", "true")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("the browser script finishes within 150 s")
        .expect("run python3");
    server.stop().await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{stdout}\n{stderr}\nthe failing page: {}",
        artifacts.join("failure.png").display()
    );

    println!("{stdout}");
    // Every scenario reported itself done; a scenario that silently did nothing fails here.
    for step in [
        "browser: javascript is disabled",
        "browser: english page ok (lang=en)",
        "browser: latvian page ok (lang=lv)",
        "browser: language switch ok",
        "browser: error state ok",
        "browser: keyboard-only sign-in ok",
        "browser: code exchanged ok",
        "browser: demo sign-in ok",
        "browser: no console errors, no CSP violations",
        "browser: every request stayed on loopback",
    ] {
        assert!(
            stdout.contains(step),
            "missing {step:?}:\n{stdout}\n{stderr}"
        );
    }
    let groups: Vec<String> = demo
        .groups
        .iter()
        .map(|g| format!("{}:{g}", dev::DEMO_REALM))
        .collect();
    let claims = format!(
        "browser: demo shows username={username} subject={}:{} realm={} groups={}",
        dev::DEMO_REALM,
        demo.username,
        dev::DEMO_REALM,
        groups.join(", ")
    );
    assert!(
        stdout.lines().any(|line| line == claims),
        "expected {claims:?}:\n{stdout}"
    );

    for name in SCREENSHOTS {
        let path = artifacts.join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let size = png_size(&bytes);
        assert!(
            size.is_some_and(|(w, h)| w > 0 && h > 0),
            "{} is not a PNG image",
            path.display()
        );
    }
}
