//! `evaluate(policies, facts, exemptions, now) -> Evaluation`: every check on every subject of
//! its kind, once per municipality the subject counts towards. Pure and total: a broken check,
//! invalid facts or a failing expression give `error` results for what they touch and nothing
//! else; facts that were not collected give `skip`, facts that failed to be collected `error`,
//! never `pass`.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::exemption::{Exemption, ExemptionState};
use crate::facts::{
    FactsDocument, Field, MunicipalityInfo, Profile, Source, SourceState, Subject, SubjectKind,
    schema,
};
use crate::policy::{Check, Lang, Mode, PolicySet, Severity, Text, fill_template};

/// The result of one check on one subject, as OpenReports names them.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Warn,
    Error,
    Skip,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Skip => "skip",
        }
    }
}

/// Which subject a result is about.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SubjectRef {
    pub kind: SubjectKind,
    pub namespace: Option<String>,
    pub name: String,
}

/// One check on one subject for one municipality.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    pub check: String,
    pub outcome: Outcome,
    pub severity: Severity,
    pub subject: SubjectRef,
    /// The municipality the result counts towards; none for platform checks.
    pub municipality: Option<String>,
    /// What was measured (the check's message template filled in), or why there is no
    /// measurement.
    pub message: Text,
    /// The exemption that turned a failure into this `skip`.
    pub exemption: Option<String>,
}

/// What a report shows about a check besides its results.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckInfo {
    pub id: String,
    pub area: String,
    pub title: Text,
    pub remediation: Text,
    pub legal_basis: Vec<String>,
    pub severity: Severity,
    pub subject: SubjectKind,
}

/// An exemption and what became of it in this evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct ExemptionReport {
    pub exemption: Exemption,
    pub state: ExemptionState,
    /// Results it turned into `skip`.
    pub applied: usize,
}

/// Counts of one municipality's (or the platform's) results.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub pass: u64,
    pub fail: u64,
    pub warn: u64,
    pub error: u64,
    pub skip: u64,
    /// `(pass + warn) / (pass + warn + fail + error)`: the share of measured checks whose
    /// requirement holds (warnings are advice). Skips are not counted; none when nothing was
    /// measured.
    pub compliance_ratio: Option<f64>,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Pass => self.pass += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Warn => self.warn += 1,
            Outcome::Error => self.error += 1,
            Outcome::Skip => self.skip += 1,
        }
    }

    fn finish(&mut self) {
        let measured = self.pass + self.warn + self.fail + self.error;
        self.compliance_ratio =
            (measured > 0).then(|| (self.pass + self.warn) as f64 / measured as f64);
    }
}

/// Everything one evaluation found.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub evaluated_at: DateTime<Utc>,
    pub checks: BTreeMap<String, CheckInfo>,
    pub municipalities: Vec<MunicipalityInfo>,
    pub results: Vec<CheckResult>,
    pub exemptions: Vec<ExemptionReport>,
}

/// Evaluates every check on every subject. See the module documentation for the semantics.
pub fn evaluate(
    policies: &PolicySet,
    facts: &FactsDocument,
    exemptions: &[Exemption],
    now: DateTime<Utc>,
) -> Evaluation {
    let schemas: BTreeMap<SubjectKind, BTreeMap<String, Field>> = SubjectKind::ALL
        .iter()
        .map(|kind| (*kind, schema(*kind)))
        .collect();
    let root = cel::Context::default();
    let subjects: Vec<PreparedSubject> = facts
        .subjects
        .iter()
        .map(|subject| PreparedSubject::new(subject, facts, &schemas[&subject.kind], &root))
        .collect();
    let states: Vec<ExemptionState> = exemptions.iter().map(|e| e.state(now)).collect();
    let mut applied = vec![0usize; exemptions.len()];
    let mut results = Vec::new();

    for check in &policies.checks {
        let schema = &schemas[&check.subject];
        let sources: BTreeSet<Source> = check
            .expression
            .facts_read
            .iter()
            .filter_map(|fact| schema.get(fact).map(|field| field.source))
            .collect();
        let standard = parameter_values(check, Profile::Standard);
        let elevated = parameter_values(check, Profile::Elevated);
        for subject in subjects.iter().filter(|s| s.subject.kind == check.subject) {
            let unavailable = unavailable_sources(facts, subject.subject, &sources)
                .or_else(|| uncollected_facts(subject.subject, &check.expression.facts_read));
            for (target, context) in subject.targets.iter().zip(&subject.contexts) {
                let params = match target.profile() {
                    Profile::Standard => &standard,
                    Profile::Elevated => &elevated,
                };
                let (mut outcome, mut message) = if let Some(problem) = &subject.problem {
                    (
                        Outcome::Error,
                        both(
                            format!("nederīgi fakti: {problem}"),
                            format!("invalid facts: {problem}"),
                        ),
                    )
                } else if let Some(unavailable) = &unavailable {
                    unavailable.clone()
                } else {
                    run_check(context, check, params)
                };
                let mut exemption = None;
                if let (Outcome::Fail | Outcome::Warn, Target::Municipality(info)) =
                    (outcome, target)
                {
                    let found = exemptions.iter().enumerate().find(|(index, e)| {
                        states[*index] == ExemptionState::Active
                            && e.covers(&check.id, &subject.subject.name, &info.namespace)
                    });
                    if let Some((index, e)) = found {
                        applied[index] += 1;
                        outcome = Outcome::Skip;
                        message = exempted_message(e, &message);
                        exemption = Some(e.name.clone());
                    }
                }
                results.push(CheckResult {
                    check: check.id.clone(),
                    outcome,
                    severity: check.severity,
                    subject: subject.reference(),
                    municipality: target.name(),
                    message,
                    exemption,
                });
            }
        }
    }

    for broken in &policies.broken {
        for subject in subjects.iter().filter(|s| s.subject.kind == broken.subject) {
            for target in &subject.targets {
                results.push(CheckResult {
                    check: broken.id.clone(),
                    outcome: Outcome::Error,
                    severity: broken.severity,
                    subject: subject.reference(),
                    municipality: target.name(),
                    message: both(
                        format!("pārbaudi nevar izpildīt: {}", broken.reason),
                        format!("the check cannot run: {}", broken.reason),
                    ),
                    exemption: None,
                });
            }
        }
    }

    let mut checks: BTreeMap<String, CheckInfo> = policies
        .checks
        .iter()
        .map(|check| {
            let info = CheckInfo {
                id: check.id.clone(),
                area: check.area.clone(),
                title: check.title.clone(),
                remediation: check.remediation.clone(),
                legal_basis: check.legal_basis.clone(),
                severity: check.severity,
                subject: check.subject,
            };
            (check.id.clone(), info)
        })
        .collect();
    for broken in &policies.broken {
        checks
            .entry(broken.id.clone())
            .or_insert_with(|| CheckInfo {
                id: broken.id.clone(),
                area: broken.id.split('.').next().unwrap_or_default().to_string(),
                title: broken.title.clone(),
                remediation: Text::default(),
                legal_basis: broken.legal_basis.clone(),
                severity: broken.severity,
                subject: broken.subject,
            });
    }

    Evaluation {
        evaluated_at: now,
        checks,
        municipalities: facts.municipalities.clone(),
        results,
        exemptions: exemptions
            .iter()
            .zip(states)
            .zip(applied)
            .map(|((exemption, state), applied)| ExemptionReport {
                exemption: exemption.clone(),
                state,
                applied,
            })
            .collect(),
    }
}

fn exempted_message(exemption: &Exemption, measured: &Text) -> Text {
    let expires = exemption.expires.format("%Y-%m-%d");
    Text {
        lv: format!(
            "izņēmums {} līdz {expires}: {} (apstiprināja {}); izmērīts: {}",
            exemption.name, exemption.reason, exemption.approver, measured.lv
        ),
        en: format!(
            "exempted by {} until {expires}: {} (approved by {}); measured: {}",
            exemption.name, exemption.reason, exemption.approver, measured.en
        ),
    }
}

/// A message in both languages. Reasons that collectors and the interpreter give are
/// technical text of their own and stay as they are inside it.
fn both(lv: String, en: String) -> Text {
    Text { lv, en }
}

/// Whom a subject's result counts towards.
enum Target<'a> {
    Platform,
    Municipality(&'a MunicipalityInfo),
    /// A municipality the facts name but do not describe; its results are errors.
    Unknown(String),
}

impl Target<'_> {
    fn name(&self) -> Option<String> {
        match self {
            Self::Platform => None,
            Self::Municipality(info) => Some(info.name.clone()),
            Self::Unknown(name) => Some(name.clone()),
        }
    }

    fn profile(&self) -> Profile {
        match self {
            Self::Municipality(info) => info.profile,
            _ => Profile::Standard,
        }
    }
}

/// A subject with its facts converted for CEL once, whatever the number of checks.
struct PreparedSubject<'a> {
    subject: &'a Subject,
    problem: Option<String>,
    targets: Vec<Target<'a>>,
    /// Per target, the scope holding `facts` and `subject`. Built once for every check: the
    /// interpreter converts a variable in full when it is added, and the facts can hold long
    /// lists.
    contexts: Vec<cel::Context<'a>>,
}

impl<'a> PreparedSubject<'a> {
    fn new(
        subject: &'a Subject,
        document: &'a FactsDocument,
        schema: &BTreeMap<String, Field>,
        root: &'a cel::Context<'a>,
    ) -> Self {
        let mut problems = crate::facts::validate_against(subject.kind, schema, &subject.facts);
        let targets = if subject.municipalities.is_empty() {
            vec![Target::Platform]
        } else {
            subject
                .municipalities
                .iter()
                .map(|name| match document.municipality(name) {
                    Some(info) => Target::Municipality(info),
                    None => {
                        problems.push(format!("municipality {name:?} is not described"));
                        Target::Unknown(name.clone())
                    }
                })
                .collect()
        };
        let facts = to_cel(&Value::Object(subject.facts.clone()));
        let contexts = targets
            .iter()
            .map(|target| {
                let mut context = root.new_inner_scope();
                context.add_variable_from_value("facts", facts.clone());
                context.add_variable_from_value("subject", subject_variable(subject, target));
                context
            })
            .collect();
        Self {
            subject,
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
            targets,
            contexts,
        }
    }

    fn reference(&self) -> SubjectRef {
        SubjectRef {
            kind: self.subject.kind,
            namespace: self.subject.namespace.clone(),
            name: self.subject.name.clone(),
        }
    }
}

/// `skip` or `error` when a source the check reads is missing for the subject.
fn unavailable_sources(
    facts: &FactsDocument,
    subject: &Subject,
    sources: &BTreeSet<Source>,
) -> Option<(Outcome, Text)> {
    let states: Vec<SourceState> = sources
        .iter()
        .map(|source| facts.source_state(subject, *source))
        .collect();
    // A failure outranks an absence: it must never look like a mere skip.
    states
        .iter()
        .find_map(|state| match state {
            SourceState::Failed(reason) => Some((
                Outcome::Error,
                both(
                    format!("faktus neizdevās savākt: {reason}"),
                    format!("facts could not be collected: {reason}"),
                ),
            )),
            _ => None,
        })
        .or_else(|| {
            states.iter().find_map(|state| match state {
                SourceState::NotCollected(reason) => Some((
                    Outcome::Skip,
                    both(format!("nav savākts: {reason}"), reason.clone()),
                )),
                _ => None,
            })
        })
}

/// `error` when the check reads a fact the collector could not read for this subject, naming
/// each such fact and why.
fn uncollected_facts(subject: &Subject, facts_read: &BTreeSet<String>) -> Option<(Outcome, Text)> {
    if subject.uncollected.is_empty() {
        return None;
    }
    let reasons: Vec<String> = facts_read
        .iter()
        .filter_map(|fact| {
            let reason = subject.uncollected.get(fact)?;
            Some(format!("{fact}: {reason}"))
        })
        .collect();
    (!reasons.is_empty()).then(|| {
        (
            Outcome::Error,
            both(
                format!("faktus neizdevās savākt: {}", reasons.join("; ")),
                format!("facts could not be collected: {}", reasons.join("; ")),
            ),
        )
    })
}

fn parameter_values(check: &Check, profile: Profile) -> cel::Value {
    let values: std::collections::HashMap<String, cel::Value> = check
        .parameters
        .iter()
        .map(|(name, parameter)| {
            let value = match (profile, &parameter.elevated) {
                (Profile::Elevated, Some(elevated)) => elevated,
                _ => &parameter.default,
            };
            (name.clone(), to_cel(value))
        })
        .collect();
    cel::Value::Map(values.into())
}

/// Runs the expression and fills in the message.
/// The `subject` variable of an expression: who is judged, for which municipality.
fn subject_variable(subject: &Subject, target: &Target<'_>) -> cel::Value {
    let fields: std::collections::HashMap<String, cel::Value> = [
        ("kind", subject.kind.as_str().to_string()),
        ("name", subject.name.clone()),
        ("namespace", subject.namespace.clone().unwrap_or_default()),
        ("municipality", target.name().unwrap_or_default()),
        (
            "profile",
            match target.profile() {
                Profile::Standard => "Standard".to_string(),
                Profile::Elevated => "Elevated".to_string(),
            },
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), cel::Value::from(v)))
    .collect();
    cel::Value::Map(fields.into())
}

fn run_check(subject: &cel::Context<'_>, check: &Check, params: &cel::Value) -> (Outcome, Text) {
    let mut context = subject.new_inner_scope();
    context.add_variable_from_value("params", params.clone());

    let outcome = match execute(&check.expression.ast, &context) {
        Ok(cel::Value::Bool(true)) => Outcome::Pass,
        Ok(cel::Value::Bool(false)) => match check.mode {
            Mode::Enforce => Outcome::Fail,
            Mode::Warn => Outcome::Warn,
        },
        Ok(other) => {
            return (
                Outcome::Error,
                both(
                    format!("izteiksmes vērtība ir {}, nevis bool", display(&other)),
                    format!("the expression yielded {}, not a bool", display(&other)),
                ),
            );
        }
        Err(error) => {
            // A fact the collectors did not provide reads as a missing map key: say which
            // fact is missing rather than how the interpreter noticed.
            let message = match error.strip_prefix("No such key: ") {
                Some(fact) => both(
                    format!("fakts {fact} šim subjektam nav savākts"),
                    format!("fact {fact} was not collected for this subject"),
                ),
                None => both(
                    format!("izteiksmes izpilde neizdevās: {error}"),
                    format!("the expression failed: {error}"),
                ),
            };
            return (Outcome::Error, message);
        }
    };
    // Both languages usually show the same measurements: each placeholder runs once.
    let mut rendered: Vec<(String, String)> = Vec::new();
    let mut render = |placeholder: &str| {
        if let Some((_, text)) = rendered.iter().find(|(p, _)| p == placeholder) {
            return text.clone();
        }
        let text = match check.placeholders.get(placeholder) {
            Some(expression) => match execute(&expression.ast, &context) {
                Ok(value) => display(&value),
                Err(_) => "—".to_string(),
            },
            None => "—".to_string(),
        };
        rendered.push((placeholder.to_string(), text.clone()));
        text
    };
    let message = Text {
        lv: fill_template(&check.message.lv, &mut render),
        en: fill_template(&check.message.en, &mut render),
    };
    (outcome, message)
}

/// Runs a compiled expression. A panic inside the interpreter becomes an error of this one
/// check on this one subject, so that it cannot stop the other checks.
fn execute(ast: &cel::IdedExpr, context: &cel::Context<'_>) -> Result<cel::Value, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| cel::Value::resolve(ast, context))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("the CEL interpreter failed on this input".to_string()),
    }
}

/// JSON facts and parameters as CEL values; whole numbers become `int`, so that they compare
/// with integer literals.
fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::from(s.clone()),
        Value::Array(items) => {
            cel::Value::List(items.iter().map(to_cel).collect::<Vec<_>>().into())
        }
        Value::Object(map) => {
            let map: std::collections::HashMap<String, cel::Value> =
                map.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            cel::Value::Map(map.into())
        }
    }
}

/// A CEL value as it appears in a message: lists shortened, no quotes around strings.
fn display(value: &cel::Value) -> String {
    const SHOWN: usize = 10;
    match value {
        cel::Value::Int(i) => i.to_string(),
        cel::Value::UInt(u) => u.to_string(),
        cel::Value::Float(f) => {
            let rounded = format!("{f:.2}");
            rounded
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        }
        cel::Value::String(s) => s.to_string(),
        cel::Value::Bool(b) => b.to_string(),
        cel::Value::Null => "—".to_string(),
        cel::Value::List(items) => {
            if items.is_empty() {
                return "—".to_string();
            }
            let mut shown: Vec<String> = items.iter().take(SHOWN).map(display).collect();
            if items.len() > SHOWN {
                shown.push(format!("… ({} in all)", items.len()));
            }
            shown.join(", ")
        }
        cel::Value::Map(map) => {
            let mut entries: Vec<String> = map
                .map
                .iter()
                .map(|(k, v)| format!("{}: {}", display(&cel::Value::from(k.clone())), display(v)))
                .collect();
            entries.sort();
            entries.join(", ")
        }
        other => format!("{other:?}"),
    }
}

impl Evaluation {
    /// Results of every described municipality, including those without any.
    pub fn summary(&self) -> BTreeMap<String, Tally> {
        let mut summary: BTreeMap<String, Tally> = self
            .municipalities
            .iter()
            .map(|m| (m.name.clone(), Tally::default()))
            .collect();
        for result in &self.results {
            if let Some(municipality) = &result.municipality {
                summary
                    .entry(municipality.clone())
                    .or_default()
                    .add(result.outcome);
            }
        }
        summary.values_mut().for_each(Tally::finish);
        summary
    }

    /// Results of the platform checks.
    pub fn platform_summary(&self) -> Tally {
        let mut tally = Tally::default();
        for result in self.results.iter().filter(|r| r.municipality.is_none()) {
            tally.add(result.outcome);
        }
        tally.finish();
        tally
    }

    /// Whether a `fail` or `error` result (an error is not a pass) reaches `severity`.
    pub fn fails_at(&self, severity: Severity) -> bool {
        self.results
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Fail | Outcome::Error) && r.severity >= severity)
    }

    /// The evaluation as JSON (see docs/monitor.md): results, per-municipality summary, the
    /// platform's tally and the exemptions.
    pub fn to_json(&self, lang: Lang) -> Value {
        let results: Vec<Value> = self
            .results
            .iter()
            .map(|r| {
                let legal_basis = self
                    .checks
                    .get(&r.check)
                    .map(|c| c.legal_basis.clone())
                    .unwrap_or_default();
                let mut result = json!({
                    "check": r.check,
                    "result": r.outcome,
                    "severity": r.severity,
                    "subject": {
                        "kind": r.subject.kind,
                        "namespace": r.subject.namespace,
                        "name": r.subject.name,
                    },
                    "municipality": r.municipality,
                    "message": r.message.get(lang),
                    "legal_basis": legal_basis,
                });
                if let (Some(exemption), Value::Object(map)) = (&r.exemption, &mut result) {
                    map.insert("exemption".into(), json!(exemption));
                }
                result
            })
            .collect();
        let exemptions: Vec<Value> = self
            .exemptions
            .iter()
            .map(|e| {
                json!({
                    "name": e.exemption.name,
                    "namespace": e.exemption.namespace,
                    "check": e.exemption.check,
                    "state": e.state,
                    "expires": e.exemption.expires.to_rfc3339(),
                    "reason": e.exemption.reason,
                    "approver": e.exemption.approver,
                    "applied": e.applied,
                })
            })
            .collect();
        json!({
            "evaluated_at": self.evaluated_at.to_rfc3339(),
            "results": results,
            "summary": self.summary(),
            "platform": self.platform_summary(),
            "exemptions": exemptions,
        })
    }
}
