//! The security monitor's printable report (`novads policies eval --format html`) opened in
//! Debian's headless Chromium, in Latvian and English, as a security officer or an auditor would
//! open it: it renders, logs no console error, loads nothing but itself, and prints. The
//! screenshots and PDFs are kept in `target/test-artifacts/` for a person to look at.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_novads");
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL_HINT: &str = "scripts/install-deps, or apt-get install chromium chromium-driver \
                            && python3 -m pip install selenium";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What is missing for the browser test, if anything.
fn missing_browser() -> Option<String> {
    let mut missing = Vec::new();
    for binary in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(binary).is_file() {
            missing.push(binary.to_owned());
        }
    }
    let selenium = Command::new("python3")
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !selenium {
        missing.push("the Python package selenium".to_owned());
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// `target/test-artifacts`, under `CARGO_TARGET_DIR` when it is set.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .map_or_else(|| root().join("target"), |dir| root().join(dir));
    target.join("test-artifacts")
}

/// Runs `novads` in the workspace root and returns its standard output.
fn novads(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(root())
        .output()
        .expect("run novads");
    assert!(
        out.status.success(),
        "novads {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn the_html_report_renders_and_prints_in_headless_chromium_in_both_languages() {
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
    let work = tempfile::tempdir().expect("tempdir");

    // The examples and what the operator would create for them, so that network policies,
    // quotas and role bindings are part of the evidence.
    let examples = [
        "examples/municipality-talsi.yaml",
        "examples/serverimage-debian-12.yaml",
        "examples/virtualserver-web.yaml",
    ];
    let mut render = vec!["render", "-f"];
    render.extend(examples);
    let rendered = work.path().join("rendered.yaml");
    std::fs::write(&rendered, novads(&render)).expect("write rendered objects");

    let mut specs = Vec::new();
    for (lang, heading) in [
        ("lv", "Minimālo kiberdrošības prasību atbilstība"),
        ("en", "Minimum cybersecurity requirements: compliance"),
    ] {
        let mut eval = vec!["policies", "eval", "-f"];
        eval.extend(examples);
        eval.push(rendered.to_str().expect("UTF-8 path"));
        eval.extend([
            "--now",
            "2026-12-01T00:00:00Z",
            "--format",
            "html",
            "--lang",
            lang,
        ]);
        let html = novads(&eval);
        assert!(
            html.starts_with("<!DOCTYPE html>"),
            "{lang}: not an HTML page"
        );
        let name = format!("compliance-report-{lang}");
        let _ = std::fs::remove_file(artifacts.join(format!("{name}.png")));
        let path = artifacts.join(format!("{name}.html"));
        std::fs::write(&path, html).expect("write report");
        specs.push(format!("{}:{lang}:{heading}", path.display()));
    }

    let script = root().join("tests/browser_report.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&artifacts)
        .args(&specs)
        // Debian's chromedriver is named explicitly; offline, Selenium could never fetch one.
        .env("SE_OFFLINE", "true")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for lang in ["lv", "en"] {
        let line = format!("report: compliance-report-{lang} ok (lang={lang},");
        assert!(stdout.contains(&line), "missing {line:?}:\n{stdout}");
        let png = std::fs::read(artifacts.join(format!("compliance-report-{lang}.png")))
            .expect("screenshot kept");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{lang}: not a PNG");
    }
}
