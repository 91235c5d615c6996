//! The postmortem timeline: a run told in the runbook's own terms, as
//! Markdown to paste into a postmortem (`run --markdown FILE`,
//! `show RUN_ID --markdown`). Built from the [`Report`] alone (plus what
//! the journal's `run-start` says about the runbook), so a run rebuilt
//! from its journal, a crashed one too, reads the same as one just run.
//!
//! Sections: what was detected (the steps before the first change), the
//! actions (every change, with its time, who approved it and how, and
//! what came of it), verification (the steps after), escalation (every
//! page and message), the outcome, and where the records are.

use crate::report::{Report, Status, StepReport};
use runbook_core::approval::Verdict;
use runbook_core::grants::Access;
use runbook_journal::audit::CallRecord;
use std::collections::BTreeMap;
use std::fmt::Write;

/// What the report does not carry: the runbook's words for its steps and
/// where the run's records are.
#[derive(Debug, Default, Clone)]
pub struct Context {
    /// Step id → the runbook's description of it.
    pub descriptions: BTreeMap<String, String>,
    pub service: String,
    pub incident: String,
    pub audit_log: Option<String>,
    pub journal: Option<String>,
}

impl Context {
    /// From a journal's `run-start` line (and the journal's path).
    pub fn from_run_start(start: &serde_json::Value, journal: Option<String>) -> Self {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        Self {
            descriptions: start["runbook"]["steps"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                .unwrap_or_default(),
            service: text(&start["runbook"]["service"]),
            incident: text(&start["incident"]),
            audit_log: start["audit_log"].as_str().map(str::to_string),
            journal,
        }
    }
}

/// `HH:MM:SS` of an RFC 3339 time, or the text as it is.
fn clock(rfc3339: &str) -> &str {
    rfc3339.get(11..19).unwrap_or(rfc3339)
}

fn at(call: &CallRecord) -> String {
    clock(&runbook_core::time::rfc3339(call.at_ms)).to_string()
}

/// Markdown text on one line: no line breaks, no table or emphasis
/// surprises from what a step wrote.
fn inline(text: &str) -> String {
    let one: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    runbook_capabilities::limits::clip(one.replace('|', "\\|"), 400)
}

/// `text` as inline code, whatever backticks it holds.
fn code(text: &str) -> String {
    let text = inline(text);
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

fn step_line(s: &StepReport, ctx: &Context) -> String {
    let what = ctx
        .descriptions
        .get(&s.id)
        .filter(|d| !d.is_empty())
        .map(|d| format!(" ({})", inline(d)))
        .unwrap_or_default();
    format!(
        "- **{}** `{}`{what}: **{}**: {}\n",
        clock(&s.started_at),
        s.id,
        s.outcome,
        inline(&s.summary)
    )
}

fn facts(s: &StepReport) -> String {
    let shown: Vec<String> = s
        .facts
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k} = {}", code(v)))
        .collect();
    if shown.is_empty() {
        String::new()
    } else {
        format!("  - {}\n", shown.join(", "))
    }
}

fn is_change(c: &CallRecord) -> bool {
    c.access == Access::Mutate && runbook_capabilities::registry::blast_radius(c.interface)
}

fn is_notice(c: &CallRecord) -> bool {
    c.access == Access::Mutate && !runbook_capabilities::registry::blast_radius(c.interface)
}

/// What came of a change or a notice.
fn result(c: &CallRecord) -> String {
    let decision = c.approval.as_ref().map(|a| a.decision);
    match (c.allowed, decision, &c.error) {
        (false, _, _) => format!("denied: {}", inline(c.result.as_str().unwrap_or_default())),
        (true, Some(Verdict::DryRun), _) => "dry run: not done".into(),
        (true, Some(Verdict::AwaitingApproval), _) => "not done: nobody approved it".into(),
        (true, Some(Verdict::Refused), _) => "refused".into(),
        (true, _, Some(kind)) => format!(
            "**failed** ({kind}): {}",
            inline(c.result.as_str().unwrap_or_default())
        ),
        (true, _, None) => "done".into(),
    }
}

fn approval(c: &CallRecord) -> String {
    match &c.approval {
        Some(a) if a.decision == Verdict::Approved => match (&a.how, &a.by) {
            (Some(how), Some(by)) => format!(", approved by {by} ({how})"),
            (Some(how), None) => format!(", approved ({how})"),
            _ => ", approved".into(),
        },
        Some(a) if a.decision == Verdict::Refused => match &a.by {
            Some(by) => format!(", refused by {by}"),
            None => String::new(),
        },
        _ => String::new(),
    }
}

/// One change or notice; a notice's text is cut short (the report has it
/// whole): the timeline says who was told, not everything they read.
fn change_line(step: &StepReport, c: &CallRecord) -> String {
    let change = c
        .approval
        .as_ref()
        .map(|a| a.change.clone())
        .unwrap_or_else(|| format!("{}.{} {}", c.interface, c.operation, c.resource));
    let change = if is_notice(c) {
        runbook_capabilities::limits::clip(change, 100)
    } else {
        change
    };
    format!(
        "- **{}** `{}`: {}{}: {}\n",
        at(c),
        step.id,
        inline(&change),
        approval(c),
        result(c)
    )
}

/// The Markdown timeline of `report`.
pub fn markdown(report: &Report, ctx: &Context) -> String {
    let mut out = String::new();
    let status = match report.status {
        Status::Resolved => "resolved",
        Status::Escalated => "escalated",
        Status::Failed => "failed",
        Status::AwaitingApproval => "stopped, awaiting approval",
        Status::Halted => "stopped by a halt",
        Status::Blocked => "blocked by another run",
        Status::Unfinished => "unfinished",
        Status::Unrecorded => "stopped: the journal could not be written",
    };
    let _ = writeln!(
        out,
        "# {} {}: {status}\n",
        report.runbook_id,
        inline(&report.title)
    );
    let mut facts_table = vec![
        (
            "Run",
            format!("`{}` ({})", report.run_id, inline(&report.mode)),
        ),
        ("Started", report.started_at.clone()),
        ("Finished", report.finished_at.clone()),
        (
            "Changes",
            format!(
                "{} of {} allowed",
                report.mutations.used, report.mutations.allowed
            ),
        ),
    ];
    if let Some(trace) = &report.trace_id {
        facts_table.push(("Trace", format!("`{}`", inline(trace))));
    }
    if !ctx.incident.is_empty() {
        facts_table.insert(0, ("Incident", format!("`{}`", inline(&ctx.incident))));
    }
    if !ctx.service.is_empty() {
        facts_table.insert(0, ("Service", format!("`{}`", inline(&ctx.service))));
    }
    let _ = writeln!(out, "| | |\n|---|---|");
    for (k, v) in facts_table {
        let _ = writeln!(
            out,
            "| {k} | {} |",
            if v.is_empty() { "-".into() } else { v }
        );
    }

    let first_change = report
        .steps
        .iter()
        .position(|s| s.calls.iter().any(is_change));
    let notifying = |s: &StepReport| s.calls.iter().any(is_notice);
    let (detection, after) = report
        .steps
        .split_at(first_change.unwrap_or(report.steps.len()));

    let _ = writeln!(out, "\n## Detection\n");
    for s in detection.iter().filter(|s| !notifying(s)) {
        out.push_str(&step_line(s, ctx));
        out.push_str(&facts(s));
    }

    let _ = writeln!(out, "\n## Actions\n");
    let mut any = false;
    for s in &report.steps {
        for c in s.calls.iter().filter(|c| is_change(c)) {
            out.push_str(&change_line(s, c));
            any = true;
        }
    }
    if !any {
        let _ = writeln!(out, "No change was made.");
    }

    let verification: Vec<&StepReport> = after
        .iter()
        .filter(|s| !notifying(s) && !s.calls.iter().any(is_change))
        .collect();
    if !verification.is_empty() {
        let _ = writeln!(out, "\n## Verification\n");
        for s in verification {
            out.push_str(&step_line(s, ctx));
            out.push_str(&facts(s));
        }
    }

    let _ = writeln!(out, "\n## Escalation\n");
    let mut any = false;
    for s in &report.steps {
        for c in s.calls.iter().filter(|c| is_notice(c)) {
            out.push_str(&change_line(s, c));
            any = true;
        }
    }
    if !any {
        let _ = writeln!(out, "Nobody was paged or messaged by the run.");
    }
    if let (Status::Escalated, Some(e)) = (report.status, &report.escalation) {
        let _ = writeln!(
            out,
            "\nThe runbook's escalation: page {}{}{}.",
            inline(&e.page),
            e.notify
                .iter()
                .map(|n| format!("; notify {}", inline(n)))
                .collect::<String>(),
            e.channel
                .as_ref()
                .map(|c| format!("; channel {}", inline(c)))
                .unwrap_or_default()
        );
    }

    let _ = writeln!(out, "\n## Outcome\n");
    let _ = writeln!(
        out,
        "**{status}** after {} step{}: {}.",
        report.steps.len(),
        if report.steps.len() == 1 { "" } else { "s" },
        report
            .steps
            .iter()
            .map(|s| format!("`{}` {}", s.id, s.outcome))
            .collect::<Vec<_>>()
            .join(" → ")
    );
    if let Some(reason) = &report.reason {
        let _ = writeln!(out, "\n{}", inline(reason));
    }

    let _ = writeln!(out, "\n## Records\n");
    let _ = writeln!(
        out,
        "- The full report: `runbook show {}` (`--json` for every call)",
        report.run_id
    );
    if let Some(j) = &ctx.journal {
        let _ = writeln!(
            out,
            "- Journal: `{}` (check it with `runbook verify-log`)",
            inline(j)
        );
    }
    if let Some(a) = &ctx.audit_log {
        let _ = writeln!(
            out,
            "- Audit log: `{}` (check it with `runbook verify-log`)",
            inline(a)
        );
    }
    out
}
