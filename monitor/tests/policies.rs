//! The shipped policies (policies/ at the repository root): they load without a single
//! problem, include the ids dashboards and auditors rely on, and every check has a passing and
//! a failing fixture in tests/fixtures/ that it judges correctly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use novads_monitor::facts::{FactsDocument, MunicipalityInfo, Profile, Source, SourceState};
use novads_monitor::policy::Mode;
use novads_monitor::{Outcome, PolicySet, Subject, SubjectKind, evaluate};
use serde_json::Value;

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn shipped() -> PolicySet {
    PolicySet::load_dir(&policies_dir()).expect("policies/ is readable")
}

/// The ids issue-level contracts name; renaming one breaks dashboards, alerts and audits.
const REQUIRED: &[&str] = &[
    "accounts.admins-per-municipality",
    "accounts.departed-with-access",
    "accounts.stale",
    "auth.directory-tls",
    "auth.lockout",
    "auth.mfa-privileged",
    "audit.chain-intact",
    "audit.retention",
    "backup.configured",
    "backup.recent",
    "image.in-support",
    "image.patched",
    "network.admin-ports-not-public",
    "network.default-deny",
    "tenancy.quota",
    "keys.rotation",
];

#[test]
fn shipped_policies_load_without_problems() {
    let set = shipped();
    let problems: Vec<String> = set.problems.iter().map(ToString::to_string).collect();
    assert!(
        problems.is_empty(),
        "problems in policies/:\n{}",
        problems.join("\n")
    );
    assert!(set.broken.is_empty());
    assert!(set.checks.len() >= 30, "only {} checks", set.checks.len());
    let ids: BTreeSet<&str> = set.checks.iter().map(|c| c.id.as_str()).collect();
    for id in REQUIRED {
        assert!(ids.contains(id), "required check {id} is missing");
    }
    for check in &set.checks {
        assert!(!check.legal_basis.is_empty(), "{}", check.id);
        assert!(
            check.legal_basis.iter().any(|b| b.starts_with("NIS2")),
            "{}: cite the NIS2 article",
            check.id
        );
    }
}

#[test]
fn the_built_in_policies_are_exactly_the_directory() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(policies_dir())
        .expect("policies/")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .collect();
    let built_in: BTreeSet<String> = novads_monitor::shipped::FILES
        .iter()
        .map(|(name, _)| (*name).to_string())
        .collect();
    assert_eq!(
        built_in, on_disk,
        "list every policy file in monitor/src/shipped.rs"
    );
    let ids =
        |set: &PolicySet| -> Vec<String> { set.checks.iter().map(|c| c.id.clone()).collect() };
    let built_in = novads_monitor::shipped::policies();
    assert!(built_in.problems.is_empty(), "{:?}", built_in.problems);
    assert_eq!(ids(&built_in), ids(&shipped()));
}

/// A fixture: facts that must pass and facts that must fail, optionally under a profile.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    #[serde(default)]
    profile: Profile,
    pass: serde_json::Map<String, Value>,
    fail: serde_json::Map<String, Value>,
    /// More facts that must fail, for checks with more than one way to fail.
    #[serde(default)]
    also_fail: Vec<serde_json::Map<String, Value>>,
}

fn document(
    kind: SubjectKind,
    facts: serde_json::Map<String, Value>,
    profile: Profile,
) -> FactsDocument {
    let municipalities = match kind {
        SubjectKind::Platform => Vec::new(),
        _ => vec!["talsi".to_string()],
    };
    FactsDocument {
        sources: BTreeMap::from([
            (Source::Cluster, SourceState::Collected),
            (Source::Federation, SourceState::Collected),
        ]),
        municipalities: vec![MunicipalityInfo {
            name: "talsi".into(),
            namespace: "muni-talsi".into(),
            profile,
        }],
        subjects: vec![Subject {
            kind,
            name: "subject".into(),
            namespace: (kind == SubjectKind::VirtualServer).then(|| "muni-talsi".into()),
            municipalities,
            facts,
            sources: BTreeMap::new(),
            uncollected: BTreeMap::new(),
        }],
    }
}

#[test]
fn every_check_passes_and_fails_its_fixtures() {
    let set = shipped();
    let now = "2026-12-01T00:00:00Z".parse().expect("time");
    let mut fixture_ids = BTreeSet::new();
    for entry in std::fs::read_dir(fixtures_dir()).expect("fixtures") {
        let path = entry.expect("entry").path();
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_string();
        fixture_ids.insert(id);
    }
    let mut failures = Vec::new();
    for check in &set.checks {
        assert!(
            fixture_ids.contains(&check.id),
            "check {} has no fixture tests/fixtures/{}.yaml",
            check.id,
            check.id
        );
        let path = fixtures_dir().join(format!("{}.yaml", check.id));
        let text = std::fs::read_to_string(&path).expect("fixture");
        let fixture: Fixture =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let violated = match check.mode {
            Mode::Enforce => Outcome::Fail,
            Mode::Warn => Outcome::Warn,
        };
        let cases = [(fixture.pass, Outcome::Pass), (fixture.fail, violated)]
            .into_iter()
            .chain(fixture.also_fail.into_iter().map(|facts| (facts, violated)));
        for (facts, expected) in cases {
            let document = document(check.subject, facts, fixture.profile);
            assert!(
                document.problems().is_empty(),
                "{}: {:?}",
                check.id,
                document.problems()
            );
            let evaluation = evaluate(&set, &document, &[], now);
            let result = evaluation
                .results
                .iter()
                .find(|r| r.check == check.id)
                .expect("a result");
            if result.outcome != expected {
                failures.push(format!(
                    "{}: expected {expected:?}, got {:?}: {}",
                    check.id, result.outcome, result.message.en
                ));
            }
            assert!(
                !result.message.en.contains('{'),
                "{}: {}",
                check.id,
                result.message.en
            );
            assert!(
                !result.message.lv.contains('{'),
                "{}: {}",
                check.id,
                result.message.lv
            );
        }
    }
    let shipped_ids: BTreeSet<String> = set.checks.iter().map(|c| c.id.clone()).collect();
    let orphans: Vec<&String> = fixture_ids.difference(&shipped_ids).collect();
    assert!(orphans.is_empty(), "fixtures without a check: {orphans:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
