//! A run compared with its scenario's `[expect]`: the path it took, the
//! outcomes the path names, and the status it ended in.

use crate::report::Report;
use runbook_capabilities::scenario::Expect;

/// How a run compared with its scenario's `[expect]`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Expectation {
    pub met: bool,
    /// The expected status and path.
    pub status: String,
    pub path: Vec<String>,
    /// Where the run went otherwise, in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

/// Compares a run with the expectation: the path (and, where an entry
/// says `step:outcome`, the outcome), the status; and a step that ended
/// `error` or `limit-exceeded` fails it unless the path names that
/// outcome, so a broken plugin cannot pass by taking the error route.
pub fn check(expect: &Expect, report: &Report) -> Expectation {
    use runbook_core::runbook::LABEL_ERROR;
    use runbook_core::runbook::LABEL_LIMIT;
    let status = serde_json::to_value(report.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let got = report.path();
    let want: Vec<&str> = expect.steps().collect();
    let mut differences = Vec::new();
    if got != want {
        let at = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        let end = "the end";
        differences.push(format!(
            "step {} was `{}`, expected `{}` (expected path {}, got {})",
            at + 1,
            got.get(at).copied().unwrap_or(end),
            want.get(at).copied().unwrap_or(end),
            want.join(" → "),
            got.join(" → ")
        ));
    }
    for (entry, step) in expect.path.iter().zip(&report.steps) {
        let named = entry.split_once(':').map(|(_, o)| o);
        match named {
            Some(o) if o != step.outcome => differences.push(format!(
                "step `{}` returned `{}`, expected `{o}`: {}",
                step.id, step.outcome, step.summary
            )),
            None if step.outcome == LABEL_ERROR || step.outcome == LABEL_LIMIT => {
                differences.push(format!(
                    "step `{}` ended `{}`: {} (write `{}:{}` in the path if that is expected)",
                    step.id, step.outcome, step.summary, step.id, step.outcome
                ))
            }
            _ => {}
        }
    }
    if status != expect.status {
        differences.push(format!(
            "status was `{status}`, expected `{}`",
            expect.status
        ));
    }
    Expectation {
        met: differences.is_empty(),
        status: expect.status.clone(),
        path: expect.path.clone(),
        differences,
    }
}
