//! Runs read back from the store: a line each for the list (filtered by
//! runbook, incident, status and age), and what a run's page shows: its
//! report rebuilt from the journal, its postmortem, and the change it
//! waits for under an approval rule with where that stands.

use anyhow::Result;
use runbook_core::approval::{Rule, Tally, Vote};
use runbook_journal::approvals::{self, Pending};
use runbook_journal::store::Store;
use serde::Deserialize;
use serde_json::Value;

/// The most runs the list reads.
pub const LIST_LIMIT: usize = 200;

/// One run, for the list.
#[derive(Debug, Clone)]
pub struct RunLine {
    pub run_id: String,
    pub runbook: String,
    pub title: String,
    pub incident: String,
    /// `running`, `awaiting-approval`, `resolved`, `escalated`, `failed`,
    /// `blocked`, `stopped`.
    pub status: String,
    pub started: String,
    pub started_ms: u64,
    /// The step and change it waits for.
    pub waits_for: Option<(String, String)>,
}

/// The list's filters (a query string).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Filter {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub runbook: String,
    #[serde(default)]
    pub incident: String,
    /// Started within this many hours (0: any time).
    #[serde(default)]
    pub hours: u64,
}

impl Filter {
    fn keeps(&self, r: &RunLine, now_ms: u64) -> bool {
        (self.status.is_empty() || r.status == self.status)
            && (self.runbook.is_empty() || r.runbook.contains(self.runbook.trim()))
            && (self.incident.is_empty() || r.incident.contains(self.incident.trim()))
            && (self.hours == 0
                || now_ms.saturating_sub(r.started_ms) <= self.hours.saturating_mul(3_600_000))
    }
}

/// The statuses a run may be listed with, for the filter's choices.
pub const STATUSES: &[&str] = &[
    "running",
    "awaiting-approval",
    "resolved",
    "escalated",
    "failed",
    "blocked",
    "halted",
    "stopped",
];

/// The newest runs (at most [`LIST_LIMIT`]) that `filter` keeps.
pub fn list(store: &dyn Store, filter: &Filter) -> Result<Vec<RunLine>> {
    let now = runbook_core::time::now_ms();
    let mut out = Vec::new();
    for run_id in store.recent_runs(LIST_LIMIT)? {
        let Ok(lines) = store.read_run(&run_id) else {
            continue;
        };
        let line = line_of(store, &run_id, &lines);
        if filter.keeps(&line, now) {
            out.push(line);
        }
    }
    Ok(out)
}

fn line_of(store: &dyn Store, run_id: &str, lines: &[Value]) -> RunLine {
    let start = lines
        .iter()
        .find(|l| l["event"] == "run-start")
        .cloned()
        .unwrap_or_default();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let status = match runbook_journal::replay::finished(lines) {
        Some(end) => text(&end["status"]),
        None if store.is_running(run_id) => "running".into(),
        None => "stopped".into(),
    };
    RunLine {
        run_id: run_id.to_string(),
        runbook: text(&start["runbook"]["id"]),
        title: text(&start["runbook"]["title"]),
        incident: text(&start["incident"]),
        status,
        started: text(&start["time"]),
        started_ms: approvals::line_ms(&start),
        waits_for: approvals::pending(lines).map(|p| (p.step, p.change)),
    }
}

/// A parked change under an approval rule, as its page shows it.
#[derive(Debug, Clone)]
pub struct Parked {
    pub pending: Pending,
    pub rule: Rule,
    pub tally: Tally,
    /// The `awaiting` line: interface, operation, resource, what it would
    /// do (`from`, `to`).
    pub awaiting: Value,
    /// The step's plugin and its digest, from `run-start`.
    pub plugin: String,
    pub digest: String,
    pub votes: Vec<Vote>,
    /// When the time to decide runs out (unix ms), if the rule says.
    pub closes_ms: Option<u64>,
}

/// Everything a run's page shows.
pub struct Detail {
    pub line: RunLine,
    pub report: runbook_engine::report::Report,
    pub postmortem: String,
    pub parked: Option<Parked>,
    /// Every decision on the run's parked changes.
    pub votes: Vec<Vote>,
    /// Journal lines so far (the live timeline asks for more).
    pub lines: usize,
}

pub fn detail(store: &dyn Store, run_id: &str) -> Result<Option<Detail>> {
    if !runbook_journal::store::is_run_id(run_id) {
        return Ok(None);
    }
    let Some(report) = runbook_engine::rebuild::report_of(store, run_id)? else {
        return Ok(None);
    };
    let lines = store.read_run(run_id)?;
    let start = lines
        .iter()
        .find(|l| l["event"] == "run-start")
        .cloned()
        .unwrap_or_default();
    let context =
        runbook_engine::postmortem::Context::from_run_start(&start, store.journal_location(run_id));
    let postmortem = runbook_engine::postmortem::markdown(&report, &context);
    let parked = parked(&lines, &start);
    Ok(Some(Detail {
        line: line_of(store, run_id, &lines),
        report,
        postmortem,
        parked,
        votes: approvals::votes(&lines),
        lines: lines.len(),
    }))
}

fn parked(lines: &[Value], start: &Value) -> Option<Parked> {
    let pending = approvals::pending(lines)?;
    let rule = approvals::rules(lines).remove(&pending.step)?;
    let awaiting = lines
        .iter()
        .rev()
        .find(|l| l["event"] == "awaiting")
        .cloned()
        .unwrap_or_default();
    let step_plugin = lines
        .iter()
        .rev()
        .find(|l| l["event"] == "step-end" && l["report"]["id"] == pending.step.as_str())
        .map(|l| {
            l["report"]["plugin"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default();
    let digest = start["plugins"][&step_plugin]["sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let tally = approvals::standing(lines, &rule, &pending);
    let votes = approvals::votes(lines)
        .into_iter()
        .filter(|v| v.step == pending.step)
        .collect();
    let closes_ms = runbook_engine::approvals::closes_at(&rule, &pending);
    Some(Parked {
        pending,
        rule,
        tally,
        awaiting,
        plugin: step_plugin,
        digest,
        votes,
        closes_ms,
    })
}
