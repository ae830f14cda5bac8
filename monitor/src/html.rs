//! The printable HTML report of an evaluation, for a security officer or an auditor: one
//! self-contained page (inline style, no scripts, no external assets) in Latvian or English,
//! with a section per municipality and one for the platform, then the exemptions. askama
//! escapes every value inserted into the template (`templates/report.html`).

use askama::Template;

use crate::evaluate::{CheckResult, Evaluation, Outcome, Tally};
use crate::exemption::ExemptionState;
use crate::policy::Lang;

/// Renders the page.
pub fn render(evaluation: &Evaluation, lang: Lang) -> Result<String, askama::Error> {
    let labels = Labels::of(lang);
    let summary = evaluation.summary();
    let mut sections: Vec<Section> = evaluation
        .municipalities
        .iter()
        .map(|m| {
            let results = evaluation
                .results
                .iter()
                .filter(|r| r.municipality.as_deref() == Some(m.name.as_str()));
            let tally = summary.get(&m.name).cloned().unwrap_or_default();
            let heading = format!("{} {} ({})", labels.municipality, m.name, m.namespace);
            section(evaluation, lang, &labels, heading, &tally, results)
        })
        .collect();
    let platform = evaluation
        .results
        .iter()
        .filter(|r| r.municipality.is_none());
    sections.push(section(
        evaluation,
        lang,
        &labels,
        labels.platform.to_string(),
        &evaluation.platform_summary(),
        platform,
    ));
    let exemptions = evaluation
        .exemptions
        .iter()
        .map(|e| ExemptionRow {
            name: e.exemption.name.clone(),
            namespace: e.exemption.namespace.clone(),
            check: e.exemption.check.clone(),
            reason: e.exemption.reason.clone(),
            approver: e.exemption.approver.clone(),
            expires: e.exemption.expires.format("%Y-%m-%d").to_string(),
            state: match e.state {
                ExemptionState::Active => labels.active,
                ExemptionState::Expired => labels.expired,
                ExemptionState::TooLong => labels.too_long,
            },
        })
        .collect();
    ReportPage {
        lang: match lang {
            Lang::Lv => "lv",
            Lang::En => "en",
        },
        evaluated_at: evaluation
            .evaluated_at
            .format("%Y-%m-%d %H:%M UTC")
            .to_string(),
        labels,
        sections,
        exemptions,
    }
    .render()
}

fn section<'a>(
    evaluation: &Evaluation,
    lang: Lang,
    labels: &Labels,
    heading: String,
    tally: &Tally,
    results: impl Iterator<Item = &'a CheckResult>,
) -> Section {
    let mut results: Vec<&CheckResult> = results.collect();
    // What needs attention first: failures, errors, warnings, skips, then passes; the most
    // severe first within each.
    let rank = |outcome: Outcome| match outcome {
        Outcome::Fail => 0,
        Outcome::Error => 1,
        Outcome::Warn => 2,
        Outcome::Skip => 3,
        Outcome::Pass => 4,
    };
    results.sort_by(|a, b| {
        rank(a.outcome)
            .cmp(&rank(b.outcome))
            .then(b.severity.cmp(&a.severity))
            .then(a.check.cmp(&b.check))
            .then(a.subject.name.cmp(&b.subject.name))
    });
    let rows = results
        .into_iter()
        .map(|result| {
            let info = evaluation.checks.get(&result.check);
            Row {
                outcome: result.outcome.as_str(),
                outcome_label: labels.outcome(result.outcome),
                check: result.check.clone(),
                severity: result.severity.as_str(),
                title: info
                    .map(|i| i.title.get(lang).to_string())
                    .unwrap_or_default(),
                subject: match &result.subject.namespace {
                    Some(ns) => format!("{} {ns}/{}", result.subject.kind, result.subject.name),
                    None => format!("{} {}", result.subject.kind, result.subject.name),
                },
                legal_basis: info.map(|i| i.legal_basis.join("; ")).unwrap_or_default(),
                message: result.message.get(lang).to_string(),
                remediation: if result.outcome == Outcome::Pass {
                    String::new()
                } else {
                    info.map(|i| i.remediation.get(lang).to_string())
                        .unwrap_or_default()
                },
            }
        })
        .collect();
    Section {
        heading,
        pass: tally.pass,
        fail: tally.fail,
        warn: tally.warn,
        error: tally.error,
        skip: tally.skip,
        ratio: tally
            .compliance_ratio
            .map_or_else(|| "—".to_string(), |r| format!("{:.0} %", r * 100.0)),
        rows,
    }
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage {
    lang: &'static str,
    evaluated_at: String,
    labels: Labels,
    sections: Vec<Section>,
    exemptions: Vec<ExemptionRow>,
}

struct Section {
    heading: String,
    pass: u64,
    fail: u64,
    warn: u64,
    error: u64,
    skip: u64,
    ratio: String,
    rows: Vec<Row>,
}

struct Row {
    outcome: &'static str,
    outcome_label: &'static str,
    check: String,
    severity: &'static str,
    title: String,
    subject: String,
    legal_basis: String,
    message: String,
    remediation: String,
}

struct ExemptionRow {
    name: String,
    namespace: String,
    check: String,
    reason: String,
    approver: String,
    expires: String,
    state: &'static str,
}

/// The page's fixed words in one language.
struct Labels {
    title: &'static str,
    evaluated: &'static str,
    municipality: &'static str,
    platform: &'static str,
    pass: &'static str,
    fail: &'static str,
    warn: &'static str,
    error: &'static str,
    skip: &'static str,
    ratio: &'static str,
    result: &'static str,
    requirement: &'static str,
    subject: &'static str,
    legal_basis: &'static str,
    evidence: &'static str,
    remediation: &'static str,
    exemptions: &'static str,
    no_exemptions: &'static str,
    exemption: &'static str,
    reason: &'static str,
    approver: &'static str,
    expires: &'static str,
    state: &'static str,
    active: &'static str,
    expired: &'static str,
    too_long: &'static str,
}

impl Labels {
    fn of(lang: Lang) -> Self {
        match lang {
            Lang::Lv => Self {
                title: "Minimālo kiberdrošības prasību atbilstība",
                evaluated: "Novērtēts",
                municipality: "Pašvaldība",
                platform: "Platforma",
                pass: "Atbilst",
                fail: "Neatbilst",
                warn: "Brīdinājums",
                error: "Kļūda",
                skip: "Izlaists",
                ratio: "Atbilstība",
                result: "Rezultāts",
                requirement: "Prasība",
                subject: "Objekts",
                legal_basis: "Tiesiskais pamats",
                evidence: "Konstatētais",
                remediation: "Novēršana",
                exemptions: "Izņēmumi",
                no_exemptions: "Izņēmumu nav.",
                exemption: "Izņēmums",
                reason: "Pamatojums",
                approver: "Apstiprināja",
                expires: "Derīgs līdz",
                state: "Stāvoklis",
                active: "spēkā",
                expired: "beidzies",
                too_long: "ilgāks par gadu, netiek piemērots",
            },
            Lang::En => Self {
                title: "Minimum cybersecurity requirements: compliance",
                evaluated: "Evaluated",
                municipality: "Municipality",
                platform: "Platform",
                pass: "Pass",
                fail: "Fail",
                warn: "Warning",
                error: "Error",
                skip: "Skipped",
                ratio: "Compliance",
                result: "Result",
                requirement: "Requirement",
                subject: "Subject",
                legal_basis: "Legal basis",
                evidence: "Evidence",
                remediation: "Remediation",
                exemptions: "Exemptions",
                no_exemptions: "There are no exemptions.",
                exemption: "Exemption",
                reason: "Reason",
                approver: "Approved by",
                expires: "Expires",
                state: "State",
                active: "active",
                expired: "expired",
                too_long: "longer than a year, not applied",
            },
        }
    }

    fn outcome(&self, outcome: Outcome) -> &'static str {
        match outcome {
            Outcome::Pass => self.pass,
            Outcome::Fail => self.fail,
            Outcome::Warn => self.warn,
            Outcome::Error => self.error,
            Outcome::Skip => self.skip,
        }
    }
}
