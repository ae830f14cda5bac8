//! Policies as data: the check model and its loader.
//!
//! A policy directory holds one YAML file per area (`accounts.yaml`, `network.yaml`, …), each a
//! list of checks whose ids start with the area. Loading never stops at the first problem: every
//! problem is reported as `FILE:LINE: check ID: what`, and a check that cannot be used is kept
//! as a [`BrokenCheck`] so that evaluation reports it as an `error` for its subjects instead of
//! silently dropping it. The format is described in docs/monitor.md.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::expr::{self, Environment, Expression};
use crate::facts::{self, FactType, SubjectKind};

/// The longest list a parameter may hold.
pub const MAX_PARAM_LIST: usize = 64;
/// The longest text (title, remediation, message template) a check may have.
pub const MAX_TEXT_LEN: usize = 2000;
/// Largest policy file read.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// Text in both languages the platform speaks.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Text {
    pub lv: String,
    pub en: String,
}

impl Text {
    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::Lv => &self.lv,
            Lang::En => &self.en,
        }
    }
}

/// Language of rendered output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lang {
    Lv,
    #[default]
    En,
}

/// Severity of a check, as OpenReports spells it.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "info" => Ok(Self::Info),
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            "critical" => Ok(Self::Critical),
            other => Err(format!(
                "unknown severity {other:?} (expected info, low, medium, high or critical)"
            )),
        }
    }
}

/// What a violated check yields: `fail` (a requirement is not met) or `warn` (advice).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Warn,
}

/// A parameter of a check: its default and the value under `securityProfile: Elevated`.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter {
    pub ty: FactType,
    pub default: Value,
    pub elevated: Option<Value>,
    pub description: String,
}

/// A loaded, compiled check.
#[derive(Debug)]
pub struct Check {
    pub id: String,
    pub area: String,
    pub title: Text,
    pub remediation: Text,
    pub legal_basis: Vec<String>,
    pub severity: Severity,
    pub subject: SubjectKind,
    pub mode: Mode,
    pub expression: Expression,
    pub message: Text,
    /// Placeholders of the message template, compiled like the expression.
    pub(crate) placeholders: BTreeMap<String, Expression>,
    pub parameters: BTreeMap<String, Parameter>,
    pub file: PathBuf,
    pub line: u64,
}

/// A check that was found but cannot run; every subject of its kind gets an `error` result.
#[derive(Debug, Clone)]
pub struct BrokenCheck {
    pub id: String,
    pub subject: SubjectKind,
    pub severity: Severity,
    pub title: Text,
    pub legal_basis: Vec<String>,
    pub reason: String,
}

/// One problem in a policy directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: u64,
    pub check: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let Some(check) = &self.check {
            write!(f, "check {check}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every check of a policy directory, with the problems found while loading it.
#[derive(Debug, Default)]
pub struct PolicySet {
    pub checks: Vec<Check>,
    pub broken: Vec<BrokenCheck>,
    pub problems: Vec<Problem>,
    /// Where each id was first seen, to name it in duplicate-id problems.
    locations: BTreeMap<String, (PathBuf, u64)>,
}

/// The directory itself could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}", path = .path.display())]
pub struct LoadError {
    pub path: PathBuf,
    pub message: String,
}

impl PolicySet {
    /// Loads every `*.yaml` / `*.yml` file of `dir`, in name order.
    pub fn load_dir(dir: &Path) -> Result<Self, LoadError> {
        let error = |message: String| LoadError {
            path: dir.to_path_buf(),
            message,
        };
        let entries = std::fs::read_dir(dir).map_err(|e| error(e.to_string()))?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| error(e.to_string()))?.path();
            let is_yaml = path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml");
            if is_yaml && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(error("no policy files (*.yaml) in the directory".into()));
        }
        let mut set = Self::default();
        for path in files {
            match read_file(&path) {
                Ok(text) => set.add_file(&path, &text),
                Err(message) => set.problems.push(Problem {
                    file: path,
                    line: 1,
                    check: None,
                    message,
                }),
            }
        }
        Ok(set)
    }

    /// Adds the checks of one file (`path` names it in problems and gives the area). Pure.
    pub fn add_file(&mut self, path: &Path, text: &str) {
        let area = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let problem = |line: u64, check: Option<&str>, message: String| Problem {
            file: path.to_path_buf(),
            line,
            check: check.map(str::to_string),
            message,
        };
        let file: PolicyFile = match serde_saphyr::from_str(text) {
            Ok(file) => file,
            Err(error) => {
                let line = error
                    .without_snippet()
                    .location()
                    .map_or(1, |l| l.line().max(1));
                let message = one_line(&error.without_snippet().to_string());
                self.problems.push(problem(
                    line,
                    None,
                    format!("invalid policy file: {message}"),
                ));
                return;
            }
        };
        for spanned in file.checks {
            let line = spanned.referenced.line().max(1);
            let raw = spanned.value;
            let id = raw.get("id").and_then(Value::as_str).map(str::to_string);
            let check = match serde_path_to_error::deserialize::<_, RawCheck>(raw.clone()) {
                Ok(check) => check,
                Err(error) => {
                    let at = error.path().to_string();
                    let mut message = describe_serde_error(&error.into_inner().to_string());
                    // A top-level unknown key names itself already.
                    let names_itself = message.starts_with("unknown key") && !at.contains('.');
                    if at != "." && !names_itself {
                        message = format!("{at}: {message}");
                    }
                    self.problems
                        .push(problem(line, id.as_deref(), message.clone()));
                    self.keep_broken(&raw, id.as_deref(), &message, path, line);
                    continue;
                }
            };
            let mut problems = Vec::new();
            let compiled = compile_check(check, &area, path, line, &mut problems);
            let first_of_id = compiled.id().and_then(|id| self.locations.get(id)).cloned();
            if let Some((file, first_line)) = &first_of_id {
                problems.push(format!(
                    "duplicate id (first at {}:{first_line})",
                    file.display()
                ));
            } else if let Some(id) = compiled.id() {
                self.locations
                    .insert(id.to_string(), (path.to_path_buf(), line));
            }
            let id = compiled.id().map(str::to_string);
            for message in &problems {
                self.problems
                    .push(problem(line, id.as_deref(), message.clone()));
            }
            match compiled {
                Compiled::Check(check) if problems.is_empty() => self.checks.push(*check),
                Compiled::Check(check) => {
                    if first_of_id.is_none() {
                        self.broken.push(BrokenCheck {
                            id: check.id.clone(),
                            subject: check.subject,
                            severity: check.severity,
                            title: check.title.clone(),
                            legal_basis: check.legal_basis.clone(),
                            reason: problems.join("; "),
                        });
                    }
                }
                Compiled::Broken(mut broken) => {
                    if first_of_id.is_none() {
                        broken.reason = problems.join("; ");
                        self.broken.push(broken);
                    }
                }
                Compiled::Unusable => {}
            }
        }
    }

    /// Keeps a check that did not deserialize as broken when its id and subject can be read.
    fn keep_broken(&mut self, raw: &Value, id: Option<&str>, reason: &str, file: &Path, line: u64) {
        let subject = raw
            .get("subject")
            .and_then(|s| serde_json::from_value::<SubjectKind>(s.clone()).ok());
        let (Some(id), Some(subject)) = (id, subject) else {
            return;
        };
        if self.locations.contains_key(id) {
            return;
        }
        self.locations
            .insert(id.to_string(), (file.to_path_buf(), line));
        let severity = raw
            .get("severity")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or(Severity::High);
        self.broken.push(BrokenCheck {
            id: id.to_string(),
            subject,
            severity,
            title: Text {
                lv: id.to_string(),
                en: id.to_string(),
            },
            legal_basis: Vec::new(),
            reason: reason.to_string(),
        });
    }

    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }
}

fn read_file(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read file: {e}"))?;
    if meta.len() > MAX_FILE_SIZE {
        return Err(format!(
            "file is {} bytes, more than the limit of {MAX_FILE_SIZE}",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read file: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "file is not valid UTF-8".to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    checks: Vec<serde_saphyr::Spanned<Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCheck {
    id: String,
    title: Text,
    remediation: Text,
    legal_basis: Vec<String>,
    severity: Severity,
    subject: SubjectKind,
    #[serde(default)]
    mode: Mode,
    expression: String,
    message: Text,
    #[serde(default)]
    parameters: BTreeMap<String, RawParameter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParameter {
    default: Value,
    #[serde(default)]
    elevated: Option<Value>,
    #[serde(default)]
    description: String,
}

enum Compiled {
    Check(Box<Check>),
    Broken(BrokenCheck),
    /// Not even an id to report against.
    Unusable,
}

impl Compiled {
    fn id(&self) -> Option<&str> {
        match self {
            Self::Check(check) => Some(&check.id),
            Self::Broken(broken) => Some(&broken.id),
            Self::Unusable => None,
        }
    }
}

/// Validates and compiles one check; problems go to `problems`.
fn compile_check(
    raw: RawCheck,
    area: &str,
    file: &Path,
    line: u64,
    problems: &mut Vec<String>,
) -> Compiled {
    if !valid_id(&raw.id) {
        problems.push(format!(
            "id {:?} must be AREA.NAME in lowercase letters, digits and `-`",
            raw.id
        ));
        return Compiled::Unusable;
    }
    if raw.id.split('.').next() != Some(area) {
        problems.push(format!(
            "id must start with `{area}.`, the area its file is named after"
        ));
    }
    for (what, text) in [
        ("title", &raw.title),
        ("remediation", &raw.remediation),
        ("message", &raw.message),
    ] {
        for (lang, value) in [("lv", &text.lv), ("en", &text.en)] {
            if value.trim().is_empty() {
                problems.push(format!("{what}.{lang} is empty"));
            } else if value.len() > MAX_TEXT_LEN {
                problems.push(format!(
                    "{what}.{lang} is longer than {MAX_TEXT_LEN} characters"
                ));
            }
        }
    }
    if raw.legal_basis.is_empty() {
        problems.push("legalBasis is empty: name the NIS2 article or regulation point".into());
    }
    for basis in &raw.legal_basis {
        if !known_legal_basis(basis) {
            problems.push(format!(
                "legalBasis {basis:?} is not a known reference (e.g. \"NIS2 Art. 21(2)(i)\", \"MK 397 (point not confirmed)\")"
            ));
        }
    }

    let mut parameters = BTreeMap::new();
    for (name, parameter) in raw.parameters {
        match compile_parameter(&name, parameter) {
            Ok(parameter) => {
                parameters.insert(name, parameter);
            }
            Err(message) => problems.push(message),
        }
    }
    let schema = facts::schema(raw.subject);
    let param_types = parameters
        .iter()
        .map(|(name, p)| (name.clone(), p.ty.clone()))
        .collect();
    let env = Environment {
        facts: &schema,
        params: &param_types,
    };
    let expression = match expr::compile(&raw.expression, &env) {
        Ok(expression) => Some(expression),
        Err(error) => {
            problems.push(error.to_string());
            None
        }
    };
    let mut placeholders = BTreeMap::new();
    for text in [&raw.message.lv, &raw.message.en] {
        match template_placeholders(text) {
            Ok(found) => {
                for source in found {
                    if placeholders.contains_key(&source) {
                        continue;
                    }
                    match expr::compile_value(&source, &env) {
                        Ok(expression) => {
                            placeholders.insert(source, expression);
                        }
                        Err(error) => {
                            problems.push(format!("message placeholder {{{source}}}: {error}"))
                        }
                    }
                }
            }
            Err(message) => problems.push(message),
        }
    }
    match expression {
        Some(expression) => Compiled::Check(Box::new(Check {
            area: area.to_string(),
            id: raw.id,
            title: raw.title,
            remediation: raw.remediation,
            legal_basis: raw.legal_basis,
            severity: raw.severity,
            subject: raw.subject,
            mode: raw.mode,
            expression,
            message: raw.message,
            placeholders,
            parameters,
            file: file.to_path_buf(),
            line,
        })),
        None => Compiled::Broken(BrokenCheck {
            id: raw.id,
            subject: raw.subject,
            severity: raw.severity,
            title: raw.title,
            legal_basis: raw.legal_basis,
            reason: String::new(),
        }),
    }
}

fn compile_parameter(name: &str, raw: RawParameter) -> Result<Parameter, String> {
    let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid_name {
        return Err(format!(
            "parameter {name:?} must be lowercase letters, digits and `_`"
        ));
    }
    let ty = parameter_type(&raw.default)
        .map_err(|problem| format!("parameter {name}: default {problem}"))?;
    if let Some(elevated) = &raw.elevated {
        let elevated_ty = parameter_type(elevated)
            .map_err(|problem| format!("parameter {name}: elevated {problem}"))?;
        let compatible = elevated_ty == ty
            || (matches!(ty, FactType::List(_))
                && elevated_ty == FactType::List(Box::new(FactType::Dyn)));
        if !compatible {
            return Err(format!(
                "parameter {name}: elevated is {elevated_ty} but the default is {ty}"
            ));
        }
    }
    Ok(Parameter {
        ty,
        default: raw.default,
        elevated: raw.elevated,
        description: raw.description,
    })
}

/// The type of a parameter value: bool, int, double, string or a list of one of them.
fn parameter_type(value: &Value) -> Result<FactType, String> {
    match value {
        Value::Bool(_) => Ok(FactType::Bool),
        Value::Number(n) if n.is_i64() => Ok(FactType::Int),
        Value::Number(_) => Ok(FactType::Double),
        Value::String(_) => Ok(FactType::String),
        Value::Array(items) => {
            if items.len() > MAX_PARAM_LIST {
                return Err(format!("has more than {MAX_PARAM_LIST} items"));
            }
            let mut item_type: Option<FactType> = None;
            for item in items {
                let ty = parameter_type(item)?;
                if matches!(ty, FactType::List(_)) {
                    return Err("is a list of lists".into());
                }
                match &item_type {
                    Some(seen) if *seen != ty => return Err("mixes item types".into()),
                    _ => item_type = Some(ty),
                }
            }
            Ok(FactType::List(Box::new(item_type.unwrap_or(FactType::Dyn))))
        }
        Value::Null => Err("is missing".into()),
        Value::Object(_) => Err("must be a bool, number, string or list".into()),
    }
}

fn valid_id(id: &str) -> bool {
    let Some((area, name)) = id.split_once('.') else {
        return false;
    };
    let part = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    part(area) && part(name)
}

/// The references a check may cite. MK 397 operative points are not confirmed from the
/// regulation's text, so none is accepted with a number beyond the confirmed scope points.
pub fn known_legal_basis(basis: &str) -> bool {
    if let Some(letter) = basis
        .strip_prefix("NIS2 Art. 21(2)(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return letter.len() == 1 && ('a'..='j').contains(&letter.chars().next().unwrap_or(' '));
    }
    matches!(
        basis,
        "NIS2 Art. 20"
            | "NIS2 Art. 23(4)"
            | "NIS2 recital 49"
            | "NKDL"
            | "MK 397 (point not confirmed)"
            | "MK 397 point 1.3"
            | "MK 442 (repealed)"
            | "MK 442 2020 amendment (repealed)"
    )
}

/// The `{…}` placeholders of a message template.
fn template_placeholders(text: &str) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            return Err("message has a `{` without a closing `}`".into());
        };
        let inner = &after[..end];
        if inner.contains('{') {
            return Err("message placeholders cannot nest `{`".into());
        }
        found.push(inner.trim().to_string());
        rest = &after[end + 1..];
    }
    Ok(found)
}

/// Replaces each `{EXPR}` of `template` with `render(EXPR)`.
pub(crate) fn fill_template(template: &str, mut render: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                out.push_str(&render(after[..end].trim()));
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn describe_serde_error(message: &str) -> String {
    let message = one_line(message);
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return format!("unknown key {rest}");
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("required key {rest} is missing");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
checks:
  - id: tenancy.quota
    title: {lv: Kvota, en: Quota}
    remediation: {lv: Iestatiet kvotu, en: Set a quota}
    legalBasis: ["NIS2 Art. 21(2)(c)"]
    severity: medium
    subject: Municipality
    expression: facts.resource_quota_present && facts.max_virtual_servers <= params.max
    message: {lv: "kvota {facts.max_virtual_servers}", en: "quota {facts.max_virtual_servers} of {params.max}"}
    parameters:
      max: {default: 10, elevated: 5}
"#;

    fn load(name: &str, text: &str) -> PolicySet {
        let mut set = PolicySet::default();
        set.add_file(Path::new(name), text);
        set
    }

    #[test]
    fn a_valid_check_loads_with_its_line() {
        let set = load("tenancy.yaml", GOOD);
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        let check = set.check("tenancy.quota").expect("loaded");
        assert_eq!(check.line, 3);
        assert_eq!(check.parameters["max"].ty, FactType::Int);
        assert_eq!(check.placeholders.len(), 2);
    }

    #[test]
    fn problems_name_file_line_and_check() {
        let text = GOOD.to_string()
            + r#"
  - id: tenancy.other
    title: {lv: "", en: Other}
    remediation: {lv: a, en: b}
    legalBasis: ["MK 397 point 7"]
    severity: low
    subject: Municipality
    expression: facts.no_such_fact == 1
    message: {lv: a, en: "{facts.nope}"}
  - id: tenancy.quota
    title: {lv: a, en: b}
    remediation: {lv: a, en: b}
    legalBasis: ["NKDL"]
    severity: low
    subject: Realm
    expression: "true"
    message: {lv: a, en: b}
  - id: tenancy.typo
    titel: {lv: a, en: b}
    subject: Realm
"#;
        let set = load("tenancy.yaml", &text);
        let lines: Vec<String> = set.problems.iter().map(|p| p.to_string()).collect();
        assert!(
            lines.contains(&"tenancy.yaml:14: check tenancy.other: title.lv is empty".to_string()),
            "{lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with(
                "tenancy.yaml:14: check tenancy.other: legalBasis \"MK 397 point 7\""
            )),
            "{lines:#?}"
        );
        assert!(
            lines.contains(
                &"tenancy.yaml:14: check tenancy.other: unknown fact `facts.no_such_fact`"
                    .to_string()
            ),
            "{lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with(
                "tenancy.yaml:14: check tenancy.other: message placeholder {facts.nope}"
            )),
            "{lines:#?}"
        );
        assert!(
            lines.contains(
                &"tenancy.yaml:22: check tenancy.quota: duplicate id (first at tenancy.yaml:3)"
                    .to_string()
            ),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("tenancy.yaml:30: check tenancy.typo: unknown key `titel`")),
            "{lines:#?}"
        );
        // The good check still runs; the broken ones are kept to report errors.
        assert!(set.check("tenancy.quota").is_some());
        let broken: Vec<&str> = set.broken.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(broken, ["tenancy.other", "tenancy.typo"]);
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let set = load(
            "network.yaml",
            "checks:\n  - id: network.x\n    title: [unclosed\n",
        );
        assert_eq!(set.problems.len(), 1);
        let line = set.problems[0].to_string();
        assert!(
            line.starts_with("network.yaml:3: invalid policy file:"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn legal_bases_are_the_known_references() {
        assert!(known_legal_basis("NIS2 Art. 21(2)(j)"));
        assert!(!known_legal_basis("NIS2 Art. 21(2)(k)"));
        assert!(known_legal_basis("MK 397 (point not confirmed)"));
        assert!(!known_legal_basis("MK 397 point 12"));
    }

    #[test]
    fn templates_are_filled() {
        assert_eq!(
            fill_template("{a} of {b}!", |p| p.to_uppercase()),
            "A of B!"
        );
    }
}
