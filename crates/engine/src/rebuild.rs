//! A run's report rebuilt from its journal, also of a run that crashed or
//! waits for an approval: what `show`, `runs`, a second run of an incident
//! and `resume` see.

use crate::report::{Mutations, Report, Status, StepReport};
use anyhow::Result;
use runbook_journal::replay::finished;
use runbook_journal::store::Store;
use serde_json::Value;

/// A run's report, rebuilt from its journal: ended steps as they ended, a
/// step it was in when it stopped as `interrupted` (with the changes it had
/// started), and `unfinished` when there is no `run-end`. `None` when the
/// run has no journal.
pub fn report_of(store: &dyn Store, run_id: &str) -> Result<Option<Report>> {
    let lines = match store.read_run(run_id) {
        Ok(l) if !l.is_empty() => l,
        _ => return Ok(None),
    };
    let start = lines.iter().find(|l| l["event"] == "run-start");
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut steps: Vec<StepReport> = Vec::new();
    let mut open: Option<(String, String, String, Vec<Value>)> = None;
    for l in &lines {
        match l["event"].as_str() {
            Some("step-start") => {
                open = Some((
                    text(&l["step"]),
                    text(&l["plugin"]),
                    text(&l["plugin_digest"]),
                    Vec::new(),
                ));
            }
            Some("intent" | "applied" | "failed") => {
                if let Some(o) = open.as_mut() {
                    o.3.push(l.clone());
                }
            }
            // Resumed after it stopped for an approval or a halt: the step
            // that stopped runs again.
            Some("resume")
                if steps
                    .last()
                    .is_some_and(|s| s.awaiting_approval.is_some() || s.halted.is_some()) =>
            {
                steps.pop();
            }
            Some("step-end") => {
                open = None;
                if let Ok(r) = serde_json::from_value::<StepReport>(l["report"].clone()) {
                    steps.push(r);
                }
            }
            _ => {}
        }
    }
    let end = finished(&lines);
    if let Some((id, plugin, digest, changes)) = open {
        let summary = match changes.iter().rfind(|c| c["event"] == "intent") {
            Some(i) => format!(
                "the run stopped during this step, after it set out to {} ({})",
                text(&i["change"]),
                if changes.iter().any(|c| c["event"] == "applied") {
                    "applied"
                } else {
                    "no result journaled: it may or may not have taken effect"
                }
            ),
            None => "the run stopped during this step, before it changed anything".into(),
        };
        steps.push(StepReport {
            id,
            plugin,
            plugin_digest: digest,
            outcome: "interrupted".into(),
            summary,
            facts: Default::default(),
            calls: Vec::new(),
            logs: Vec::new(),
            stdout: String::new(),
            stdout_truncated: false,
            stderr: String::new(),
            stderr_truncated: false,
            started_at: String::new(),
            wall_us: 0,
            busy_us: 0,
            next: None,
            awaiting_approval: None,
            held_by: None,
            blocked: None,
            halted: None,
            run_id: run_id.to_string(),
        });
    }
    let status = end
        .and_then(|e| serde_json::from_value::<Status>(e["status"].clone()).ok())
        .unwrap_or(Status::Unfinished);
    let reason = match end {
        Some(e) => e["reason"].as_str().map(str::to_string),
        None => Some(format!(
            "the run did not finish (it crashed or was stopped); continue it with `runbook resume {run_id}`"
        )),
    };
    let time = |l: Option<&Value>| l.map(|l| text(&l["time"])).unwrap_or_default();
    // As the run told them, when its end says (run time is simulated
    // under `--sim`); else when the journal's lines were written.
    let told = |key: &str| end.and_then(|e| e[key].as_str()).map(str::to_string);
    let runbook = start.map(|s| &s["runbook"]);
    Ok(Some(Report {
        runbook_id: runbook.map(|r| text(&r["id"])).unwrap_or_default(),
        title: runbook.map(|r| text(&r["title"])).unwrap_or_default(),
        run_id: run_id.to_string(),
        mode: told("mode").unwrap_or_else(|| {
            start
                .map(|s| {
                    format!(
                        "{} `{}`, from the journal",
                        text(&s["backend"]["kind"]),
                        text(&s["backend"]["path"])
                    )
                })
                .unwrap_or_default()
        }),
        status,
        reason,
        started_at: told("started_at").unwrap_or_else(|| time(start)),
        finished_at: told("finished_at").unwrap_or_else(|| time(end)),
        elapsed_ms: end.and_then(|e| e["elapsed_ms"].as_u64()).unwrap_or(0),
        wall_ms: end.and_then(|e| e["wall_ms"].as_u64()).unwrap_or(0),
        steps,
        escalation: runbook.and_then(|r| serde_json::from_value(r["escalation"].clone()).ok()),
        mutations: end
            .and_then(|e| serde_json::from_value::<Mutations>(e["mutations"].clone()).ok())
            .unwrap_or_default(),
        end_recorded: end.is_some(),
        // The trace it started in (a resumed run goes on in it), else the
        // last one a resume started (it began untraced).
        trace_id: start
            .into_iter()
            .chain(lines.iter().rev().filter(|l| l["event"] == "resume"))
            .find_map(|l| l["trace"]["trace_id"].as_str())
            .map(str::to_string),
    }))
}
