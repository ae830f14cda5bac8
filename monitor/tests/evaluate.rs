//! Evaluation semantics: skipped and failed sources, broken checks, invalid facts, exemptions,
//! the Elevated profile, the summary, and OpenReports objects valid against the published
//! schemas in tests/schemas/.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use novads_monitor::facts::{FactsDocument, MunicipalityInfo, Profile};
use novads_monitor::report::{self, MAX_REPORT_RESULTS};
use novads_monitor::{
    Exemption, ExemptionState, Lang, Outcome, PolicySet, Severity, Source, SourceState, Subject,
    SubjectKind, evaluate,
};
use serde_json::{Value, json};

const POLICIES: &str = r#"
checks:
  - id: demo.admins
    title: {lv: Administratori, en: Admins}
    remediation: {lv: Samaziniet, en: Reduce}
    legalBasis: ["NIS2 Art. 21(2)(i)"]
    severity: high
    subject: Municipality
    expression: facts.admin_members <= params.max_admins
    message: {lv: "{facts.admin_members} administratori", en: "{facts.admin_members} admins (at most {params.max_admins})"}
    parameters:
      max_admins: {default: 3, elevated: 2}
  - id: demo.quota
    title: {lv: Kvota, en: Quota}
    remediation: {lv: Iestatiet, en: Set}
    legalBasis: ["NIS2 Art. 21(2)(c)"]
    severity: medium
    subject: Municipality
    expression: facts.resource_quota_present
    message: {lv: "kvota {facts.resource_quota_present}", en: "quota {facts.resource_quota_present}"}
  - id: demo.divides
    title: {lv: Dala, en: Divides}
    remediation: {lv: a, en: b}
    legalBasis: ["NIS2 Art. 21(2)(b)"]
    severity: low
    subject: Municipality
    expression: facts.virtual_servers / facts.max_virtual_servers == 0
    message: {lv: a, en: b}
  - id: demo.broken
    title: {lv: Salauzts, en: Broken}
    remediation: {lv: a, en: b}
    legalBasis: ["NIS2 Art. 21(2)(b)"]
    severity: critical
    subject: Municipality
    expression: facts.no_such_fact == 0
    message: {lv: a, en: b}
"#;

fn policies() -> PolicySet {
    let mut set = PolicySet::default();
    set.add_file(Path::new("demo.yaml"), POLICIES);
    set
}

fn now() -> DateTime<Utc> {
    "2026-12-01T12:00:00Z".parse().expect("time")
}

fn municipality(name: &str, facts: Value) -> Subject {
    let Value::Object(facts) = facts else {
        panic!("facts are an object")
    };
    Subject {
        kind: SubjectKind::Municipality,
        name: name.into(),
        namespace: None,
        municipalities: vec![name.into()],
        facts,
        sources: BTreeMap::new(),
        uncollected: BTreeMap::new(),
    }
}

fn document(subjects: Vec<Subject>, federation: SourceState) -> FactsDocument {
    let info = |name: &str, profile| MunicipalityInfo {
        name: name.into(),
        namespace: format!("muni-{name}"),
        profile,
    };
    FactsDocument {
        sources: BTreeMap::from([
            (Source::Cluster, SourceState::Collected),
            (Source::Federation, federation),
        ]),
        municipalities: vec![
            info("talsi", Profile::Standard),
            info("riga", Profile::Elevated),
        ],
        subjects,
    }
}

fn outcome(evaluation: &novads_monitor::Evaluation, check: &str, municipality: &str) -> Outcome {
    evaluation
        .results
        .iter()
        .find(|r| r.check == check && r.municipality.as_deref() == Some(municipality))
        .map(|r| r.outcome)
        .unwrap_or_else(|| panic!("no result for {check} on {municipality}"))
}

#[test]
fn a_broken_check_errors_and_the_others_still_run() {
    let set = policies();
    assert_eq!(set.problems.len(), 1, "{:?}", set.problems);
    assert_eq!(
        set.problems[0].to_string(),
        "demo.yaml:29: check demo.broken: unknown fact `facts.no_such_fact`"
    );
    let facts = document(
        vec![municipality(
            "talsi",
            json!({"admin_members": 2, "resource_quota_present": true, "virtual_servers": 1, "max_virtual_servers": 0}),
        )],
        SourceState::Collected,
    );
    let evaluation = evaluate(&set, &facts, &[], now());
    assert_eq!(outcome(&evaluation, "demo.admins", "talsi"), Outcome::Pass);
    assert_eq!(outcome(&evaluation, "demo.quota", "talsi"), Outcome::Pass);
    // Division by zero fails at run time: an error, not a pass, and nothing else is affected.
    assert_eq!(
        outcome(&evaluation, "demo.divides", "talsi"),
        Outcome::Error
    );
    assert_eq!(outcome(&evaluation, "demo.broken", "talsi"), Outcome::Error);
    let broken = evaluation
        .results
        .iter()
        .find(|r| r.check == "demo.broken")
        .expect("result");
    assert!(
        broken.message.en.contains("unknown fact"),
        "{}",
        broken.message.en
    );
}

#[test]
fn facts_not_collected_skip_and_facts_that_failed_are_errors() {
    let set = policies();
    let subjects = vec![municipality(
        "talsi",
        json!({"resource_quota_present": true}),
    )];
    let skipped = document(
        subjects.clone(),
        SourceState::NotCollected("federation facts not collected (no --config)".into()),
    );
    let evaluation = evaluate(&set, &skipped, &[], now());
    let admins = evaluation
        .results
        .iter()
        .find(|r| r.check == "demo.admins")
        .expect("result");
    assert_eq!(admins.outcome, Outcome::Skip);
    assert_eq!(
        admins.message.en,
        "federation facts not collected (no --config)"
    );
    assert_eq!(outcome(&evaluation, "demo.quota", "talsi"), Outcome::Pass);

    let failed = document(
        subjects.clone(),
        SourceState::Failed("ldap://ldap.talsi.lv: connection refused".into()),
    );
    let evaluation = evaluate(&set, &failed, &[], now());
    let admins = evaluation
        .results
        .iter()
        .find(|r| r.check == "demo.admins")
        .expect("result");
    assert_eq!(admins.outcome, Outcome::Error);
    assert!(admins.message.en.contains("connection refused"));

    // One subject's own failure outranks the document's "collected".
    let mut own = subjects;
    own[0].sources.insert(
        Source::Federation,
        SourceState::Failed("directory down".into()),
    );
    let evaluation = evaluate(&set, &document(own, SourceState::Collected), &[], now());
    assert_eq!(outcome(&evaluation, "demo.admins", "talsi"), Outcome::Error);
}

/// A source that claims "collected" but lacks a fact the check reads: an error that names the
/// missing fact, never a pass.
#[test]
fn a_fact_missing_from_a_collected_source_is_an_error_naming_it() {
    let set = policies();
    let facts = document(
        vec![municipality(
            "talsi",
            json!({"resource_quota_present": true}),
        )],
        SourceState::Collected,
    );
    let evaluation = evaluate(&set, &facts, &[], now());
    let admins = evaluation
        .results
        .iter()
        .find(|r| r.check == "demo.admins")
        .expect("result");
    assert_eq!(admins.outcome, Outcome::Error);
    assert_eq!(
        admins.message.en,
        "fact admin_members was not collected for this subject"
    );
}

#[test]
fn a_fact_that_could_not_be_collected_is_an_error_with_the_reason_even_if_present() {
    let set = policies();
    // The collector says why admin_members is unknown; a value left behind must not pass.
    let mut talsi = municipality(
        "talsi",
        json!({"admin_members": 1, "resource_quota_present": true}),
    );
    talsi.uncollected.insert(
        "admin_members".into(),
        "the directory hides its groups".into(),
    );
    let facts = document(vec![talsi], SourceState::Collected);
    assert!(facts.problems().is_empty());
    let evaluation = evaluate(&set, &facts, &[], now());
    let admins = evaluation
        .results
        .iter()
        .find(|r| r.check == "demo.admins")
        .expect("result");
    assert_eq!(admins.outcome, Outcome::Error);
    assert_eq!(
        admins.message.en,
        "facts could not be collected: admin_members: the directory hides its groups"
    );
    // Checks reading other facts run as usual.
    assert_eq!(outcome(&evaluation, "demo.quota", "talsi"), Outcome::Pass);

    // An unknown fact named as uncollected is a problem of the document.
    let mut riga = municipality("riga", json!({}));
    riga.uncollected.insert("no_such_fact".into(), "why".into());
    let problems = document(vec![riga], SourceState::Collected).problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("unknown fact `no_such_fact`"),
        "{problems:?}"
    );

    // Merged with a collector that did read it, the fact counts as collected.
    let mut merged = document(
        vec![{
            let mut s = municipality("talsi", json!({}));
            s.uncollected
                .insert("admin_members".into(), "hidden".into());
            s
        }],
        SourceState::Collected,
    );
    merged.merge(document(
        vec![municipality("talsi", json!({"admin_members": 2}))],
        SourceState::Collected,
    ));
    assert!(merged.subjects[0].uncollected.is_empty());
}

#[test]
fn invalid_facts_give_errors_for_that_subject_only() {
    let set = policies();
    let facts = document(
        vec![
            municipality(
                "talsi",
                json!({"admin_members": "many", "resource_quota_present": true}),
            ),
            municipality(
                "riga",
                json!({"admin_members": 1, "resource_quota_present": true}),
            ),
        ],
        SourceState::Collected,
    );
    assert_eq!(facts.problems().len(), 1);
    let evaluation = evaluate(&set, &facts, &[], now());
    assert_eq!(outcome(&evaluation, "demo.quota", "talsi"), Outcome::Error);
    assert_eq!(outcome(&evaluation, "demo.quota", "riga"), Outcome::Pass);
}

#[test]
fn elevated_profile_tightens_parameters() {
    let set = policies();
    let facts = document(
        vec![
            municipality("talsi", json!({"admin_members": 3})),
            municipality("riga", json!({"admin_members": 3})),
        ],
        SourceState::Collected,
    );
    let evaluation = evaluate(&set, &facts, &[], now());
    assert_eq!(outcome(&evaluation, "demo.admins", "talsi"), Outcome::Pass);
    assert_eq!(outcome(&evaluation, "demo.admins", "riga"), Outcome::Fail);
    let riga = evaluation
        .results
        .iter()
        .find(|r| r.check == "demo.admins" && r.municipality.as_deref() == Some("riga"))
        .expect("result");
    assert_eq!(riga.message.en, "3 admins (at most 2)");
}

fn exemption(name: &str, namespace: &str, expires: &str) -> Exemption {
    Exemption {
        name: name.into(),
        namespace: namespace.into(),
        check: "demo.quota".into(),
        subjects: vec![],
        reason: "quota is being migrated".into(),
        approver: "anna@talsi".into(),
        expires: expires.parse().expect("time"),
        granted: Some("2026-11-01T00:00:00Z".parse().expect("time")),
    }
}

#[test]
fn exemptions_skip_failures_in_their_own_namespace_until_they_expire() {
    let set = policies();
    let facts = document(
        vec![
            municipality("talsi", json!({"resource_quota_present": false})),
            municipality("riga", json!({"resource_quota_present": false})),
        ],
        SourceState::Collected,
    );
    let exemptions = [
        exemption("quota-migration", "muni-talsi", "2027-02-01T00:00:00Z"),
        exemption("old", "muni-riga", "2026-11-30T00:00:00Z"),
    ];
    let evaluation = evaluate(&set, &facts, &exemptions, now());
    let talsi = evaluation
        .results
        .iter()
        .find(|r| r.check == "demo.quota" && r.municipality.as_deref() == Some("talsi"))
        .expect("result");
    assert_eq!(talsi.outcome, Outcome::Skip);
    assert_eq!(talsi.exemption.as_deref(), Some("quota-migration"));
    assert!(
        talsi.message.en.contains("quota is being migrated"),
        "{}",
        talsi.message.en
    );
    assert!(talsi.message.en.contains("2027-02-01"));
    // Expired: no longer applies, and it is reported as expired.
    assert_eq!(outcome(&evaluation, "demo.quota", "riga"), Outcome::Fail);
    assert_eq!(evaluation.exemptions[0].state, ExemptionState::Active);
    assert_eq!(evaluation.exemptions[0].applied, 1);
    assert_eq!(evaluation.exemptions[1].state, ExemptionState::Expired);
    assert_eq!(evaluation.exemptions[1].applied, 0);
}

#[test]
fn summary_counts_per_municipality_and_fail_on_threshold() {
    let set = policies();
    let facts = document(
        vec![municipality(
            "talsi",
            json!({"admin_members": 5, "resource_quota_present": true, "virtual_servers": 0, "max_virtual_servers": 5}),
        )],
        SourceState::Collected,
    );
    let evaluation = evaluate(&set, &facts, &[], now());
    let summary = evaluation.summary();
    let talsi = &summary["talsi"];
    // admins fail, quota pass, divides pass, broken error.
    assert_eq!((talsi.pass, talsi.fail, talsi.error), (2, 1, 1));
    assert_eq!(talsi.compliance_ratio, Some(0.5));
    // riga has no subjects: listed, nothing measured.
    assert_eq!(summary["riga"].compliance_ratio, None);
    assert!(
        evaluation.fails_at(Severity::Critical),
        "the broken critical check errs"
    );
    let json = evaluation.to_json(Lang::En);
    assert_eq!(json["summary"]["talsi"]["fail"], 1);
    assert_eq!(json["results"][0]["subject"]["kind"], "Municipality");
    assert_eq!(json["results"][0]["legal_basis"][0], "NIS2 Art. 21(2)(i)");
}

fn validate(schema_file: &str, report: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/schemas")
        .join(schema_file);
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("schema")).expect("json");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(report)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{schema_file}: {errors:#?}");
}

#[test]
fn reports_are_valid_openreports_objects_and_bounded() {
    let set = policies();
    let mut subjects: Vec<Subject> = (0..400)
        .map(|i| {
            let mut s = municipality(
                "talsi",
                json!({"admin_members": 9, "resource_quota_present": false}),
            );
            s.name = format!("m{i}");
            s
        })
        .collect();
    subjects.push(Subject {
        kind: SubjectKind::Platform,
        name: "novads".into(),
        namespace: None,
        municipalities: vec![],
        facts: serde_json::Map::new(),
        sources: BTreeMap::new(),
        uncollected: BTreeMap::new(),
    });
    let facts = document(subjects, SourceState::Collected);
    let evaluation = evaluate(&set, &facts, &[], now());
    let reports = report::reports(&evaluation, Lang::Lv);
    assert_eq!(reports.len(), 3, "talsi, riga and the cluster report");
    let talsi = serde_json::to_value(&reports[0]).expect("json");
    validate("report_v1alpha1.json", &talsi);
    assert_eq!(talsi["apiVersion"], "openreports.io/v1alpha1");
    assert_eq!(talsi["kind"], "Report");
    assert_eq!(talsi["metadata"]["namespace"], "muni-talsi");
    assert_eq!(talsi["summary"]["fail"], 800);
    assert_eq!(talsi["summary"]["error"], 800);
    assert_eq!(
        talsi["results"].as_array().expect("list").len(),
        MAX_REPORT_RESULTS
    );
    assert_eq!(
        talsi["results"][0]["severity"], "critical",
        "most severe first"
    );
    assert!(talsi["metadata"]["annotations"]["novads.io/truncated"].is_string());
    let cluster = serde_json::to_value(&reports[2]).expect("json");
    validate("clusterreport_v1alpha1.json", &cluster);
    assert_eq!(cluster["kind"], "ClusterReport");
    assert!(cluster["metadata"].get("namespace").is_none());
}

#[test]
fn the_html_report_is_self_contained_escaped_and_in_both_languages() {
    let set = policies();
    let mut hostile = municipality(
        "talsi",
        json!({"admin_members": 5, "resource_quota_present": false}),
    );
    hostile.name = "<script>alert(1)</script>".into();
    let facts = document(vec![hostile], SourceState::Collected);
    let exemptions = [exemption(
        "quota-migration",
        "muni-talsi",
        "2027-02-01T00:00:00Z",
    )];
    let evaluation = evaluate(&set, &facts, &exemptions, now());
    for (lang, words) in [
        (
            Lang::Lv,
            [
                "Minimālo kiberdrošības prasību atbilstība",
                "Tiesiskais pamats",
                "Novēršana",
            ],
        ),
        (
            Lang::En,
            [
                "Minimum cybersecurity requirements",
                "Legal basis",
                "Remediation",
            ],
        ),
    ] {
        let page = novads_monitor::html::render(&evaluation, lang).expect("renders");
        for word in words {
            assert!(page.contains(word), "{word} missing");
        }
        assert!(!page.contains("<script"), "a subject name is escaped");
        assert!(page.contains("&#60;script&#62;") || page.contains("&lt;script&gt;"));
        for external in ["src=", "href=", "http://", "https://", "@import", "url("] {
            assert!(!page.contains(external), "external asset: {external}");
        }
        assert!(page.contains("NIS2 Art. 21(2)(i)"));
        assert!(
            page.contains("quota is being migrated"),
            "exemption reason shown"
        );
        assert!(page.contains("2027-02-01"), "exemption expiry shown");
        assert!(
            page.contains("Samaziniet") || page.contains("Reduce"),
            "remediation shown"
        );
    }
}

/// Runs `promtool check metrics` on an exposition when promtool is installed (Debian
/// `prometheus`); with NOVADS_REQUIRE_SERVICES=1 a missing promtool fails the test.
pub fn promtool_check(exposition: &str) {
    use std::io::Write;
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(promtool) = promtool else {
        assert!(
            std::env::var("NOVADS_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "promtool is not installed (Debian package prometheus)"
        );
        eprintln!("skipping promtool check metrics: promtool is not installed");
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool check metrics:\n{said}");
    assert!(said.trim().is_empty(), "promtool check metrics:\n{said}");
}

#[test]
fn metrics_count_results_per_check_and_municipality_and_pass_promtool() {
    use novads_monitor::metrics::MonitorMetrics;
    use prometheus::{Encoder, Registry, TextEncoder};

    let facts = document(
        vec![
            municipality(
                "talsi",
                json!({"admin_members": 5, "resource_quota_present": true, "virtual_servers": 0, "max_virtual_servers": 1}),
            ),
            municipality(
                "riga",
                json!({"admin_members": 1, "resource_quota_present": false, "virtual_servers": 0, "max_virtual_servers": 1}),
            ),
        ],
        SourceState::Collected,
    );
    let evaluation = evaluate(&policies(), &facts, &[], now());
    let registry = Registry::new();
    let metrics = MonitorMetrics::register(&registry, false).expect("register");
    metrics.record(&evaluation);
    metrics.observe_duration(std::time::Duration::from_millis(120));
    metrics.mark_success(now());
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .expect("encode");
    let text = String::from_utf8(text).expect("utf-8");
    // talsi: admins fail, quota and divides pass, broken errors: 2 of 4 hold.
    for line in [
        "novads_compliance_ratio{municipality=\"talsi\"} 0.5",
        "novads_compliance_ratio{municipality=\"riga\"} 0.5",
        "novads_monitor_subjects_evaluated{check=\"demo.admins\",municipality=\"talsi\"} 1",
        "novads_monitor_subjects_failing{check=\"demo.admins\",municipality=\"talsi\",severity=\"high\"} 1",
        "novads_monitor_subjects_failing{check=\"demo.admins\",municipality=\"riga\",severity=\"high\"} 0",
        "novads_monitor_subjects_failing{check=\"demo.quota\",municipality=\"riga\",severity=\"medium\"} 1",
        "novads_monitor_check_errors{check=\"demo.broken\"} 2",
        "novads_monitor_check_errors{check=\"demo.admins\"} 0",
        "novads_monitor_evaluation_duration_seconds_count 1",
        "novads_monitor_last_success_timestamp_seconds 1796126400",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    promtool_check(&text);

    // A municipality that is gone leaves no series behind.
    let fewer = document(
        vec![municipality(
            "riga",
            json!({"admin_members": 1, "resource_quota_present": true, "virtual_servers": 0, "max_virtual_servers": 1}),
        )],
        SourceState::Collected,
    );
    let mut fewer = fewer;
    fewer.municipalities.retain(|m| m.name == "riga");
    metrics.record(&evaluate(&policies(), &fewer, &[], now()));
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .expect("encode");
    let text = String::from_utf8(text).expect("utf-8");
    assert!(!text.contains("talsi"), "{text}");
}
