//! Plain-text rendering of an evaluation for a terminal.

use std::fmt::Write;

use crate::evaluate::Evaluation;
use crate::policy::Lang;

/// One line per result (RESULT SEVERITY CHECK SUBJECT MUNICIPALITY MESSAGE), then one summary
/// line per municipality and one for the platform.
pub fn table(evaluation: &Evaluation, lang: Lang) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "RESULT".into(),
        "SEVERITY".into(),
        "CHECK".into(),
        "SUBJECT".into(),
        "MUNICIPALITY".into(),
        "MESSAGE".into(),
    ]];
    for result in &evaluation.results {
        let subject = match &result.subject.namespace {
            Some(namespace) => format!(
                "{}/{}/{}",
                result.subject.kind, namespace, result.subject.name
            ),
            None => format!("{}/{}", result.subject.kind, result.subject.name),
        };
        rows.push([
            result.outcome.as_str().to_string(),
            result.severity.as_str().to_string(),
            result.check.clone(),
            subject,
            result.municipality.clone().unwrap_or_else(|| "-".into()),
            result.message.get(lang).replace('\n', " "),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row.iter()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        for (width, cell) in widths.iter().zip(row.iter()) {
            let _ = write!(out, "{cell:<width$}  ");
        }
        let _ = writeln!(out, "{}", row[5]);
    }
    out.push('\n');
    let line = |name: &str, tally: &crate::evaluate::Tally| {
        let ratio = tally
            .compliance_ratio
            .map_or_else(|| "-".to_string(), |r| format!("{:.0}%", r * 100.0));
        format!(
            "{name}: {} pass, {} fail, {} warn, {} error, {} skip; compliance {ratio}\n",
            tally.pass, tally.fail, tally.warn, tally.error, tally.skip
        )
    };
    for (municipality, tally) in evaluation.summary() {
        out.push_str(&line(&municipality, &tally));
    }
    out.push_str(&line("platform", &evaluation.platform_summary()));
    out
}
