//! What a run produced: the JSON report and the human timeline.

use runbook_capabilities::state::LogLine;
use runbook_core::approval::Verdict;
use runbook_core::exit::Exit;
use runbook_core::runbook::Escalation;
use runbook_journal::audit::CallRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Resolved,
    Escalated,
    /// A step ended in a way the runbook does not route.
    Failed,
    /// A mutation needed an approval nobody could give; the run stopped
    /// before it.
    AwaitingApproval,
    /// Another run holds what this run had to change (or its incident).
    Blocked,
    /// The journal has no end: the run crashed or was stopped (`show`).
    Unfinished,
    /// The journal could not be written: the run stopped before its next
    /// change.
    Unrecorded,
    /// A halt (`runbook halt`) stopped it before a change; `runbook
    /// resume-all` continues it once the halt is lifted.
    Halted,
}

impl Status {
    /// How the timeline says it.
    pub fn word(self) -> &'static str {
        match self {
            Status::Resolved => "resolved",
            Status::Escalated => "escalated",
            Status::Failed => "failed",
            Status::AwaitingApproval => "awaiting approval",
            Status::Blocked => "blocked",
            Status::Unfinished => "unfinished",
            Status::Unrecorded => "stopped: the journal could not be written",
            Status::Halted => "halted",
        }
    }

    /// The CLI's exit status for a run that ended so.
    pub fn exit(self) -> Exit {
        match self {
            Status::Resolved => Exit::Ok,
            Status::Escalated => Exit::Escalated,
            Status::Failed => Exit::Failed,
            Status::AwaitingApproval => Exit::AwaitingApproval,
            Status::Blocked => Exit::Blocked,
            Status::Unfinished => Exit::Failed,
            Status::Unrecorded => Exit::Unrecorded,
            Status::Halted => Exit::Halted,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub runbook_id: String,
    pub title: String,
    pub run_id: String,
    pub mode: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    /// Run time covered, simulated under `--sim`.
    pub elapsed_ms: u64,
    pub wall_ms: u64,
    pub steps: Vec<StepReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
    /// Changes made, of those the runbook allows (`max_mutations`).
    pub mutations: Mutations,
    /// The run's journal holds its `run-end` (written by this run, or read
    /// back): what a worker relies on to acknowledge without reading the
    /// journal again. False without a journal, and for a run the host
    /// panicked in (it is continued from its journal).
    #[serde(skip)]
    pub end_recorded: bool,
    /// The run's OpenTelemetry trace, when tracing was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Mutations {
    pub used: usize,
    pub allowed: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    pub id: String,
    pub plugin: String,
    pub plugin_digest: String,
    pub outcome: String,
    pub summary: String,
    pub facts: BTreeMap<String, String>,
    pub calls: Vec<CallRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout: String,
    /// More was written than the host keeps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdout_truncated: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stderr_truncated: bool,
    pub started_at: String,
    pub wall_us: u64,
    /// Of `wall_us`, the time the step held a thread (setup,
    /// instantiation, guest code, host calls and the journal writes in
    /// them, teardown), without the time it waited for one while other
    /// steps ran. For `bench`; not in reports or journals.
    #[serde(skip)]
    pub busy_us: u64,
    /// Where the runbook went next: a step id, `resolved` or `escalated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The change this step wanted and nobody approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_approval: Option<String>,
    /// The organisation's policies held that change: which, and the
    /// approvals that lift it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    /// Who holds what this step had to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    /// A halt stopped the step before a change: who halted, when, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
    #[serde(default, skip_serializing)]
    pub run_id: String,
}

impl Report {
    pub fn path(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.id.as_str()).collect()
    }

    /// The readable timeline.
    pub fn render(&self) -> String {
        let mut out = header(&self.runbook_id, &self.title, &self.mode, &self.run_id);
        for s in &self.steps {
            out.push_str(&render_step(s));
        }
        out.push_str(&self.footer());
        out
    }

    /// What follows the steps: status, reason, who to page.
    pub fn footer(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "status: {} after {} step{} ({} of run time, {} ms wall) at {}",
            self.status.word(),
            self.steps.len(),
            if self.steps.len() == 1 { "" } else { "s" },
            humantime::format_duration(std::time::Duration::from_secs(self.elapsed_ms / 1000)),
            self.wall_ms,
            self.finished_at
        );
        if let Some(reason) = &self.reason {
            let _ = writeln!(out, "reason: {reason}");
        }
        if let (Status::Escalated, Some(e)) = (self.status, &self.escalation) {
            let _ = writeln!(out, "page: {}", e.page);
            for n in &e.notify {
                let _ = writeln!(out, "notify: {n}");
            }
            if let Some(c) = &e.channel {
                let _ = writeln!(out, "channel: {c}");
            }
        }
        out
    }
}

/// The timeline's first line.
pub fn header(runbook_id: &str, title: &str, mode: &str, run_id: &str) -> String {
    format!("{runbook_id} {title} ({mode}, run {run_id})\n")
}

/// One step of the timeline.
pub fn render_step(s: &StepReport) -> String {
    let mut out = String::new();
    {
        {
            let time = s.started_at.get(11..19).unwrap_or(&s.started_at);
            let _ = writeln!(
                out,
                "{time}  {:<20} {:<18} {:<14} {:>8.1} ms",
                s.id,
                s.plugin,
                s.outcome,
                s.wall_us as f64 / 1000.0
            );
            let _ = writeln!(out, "          {}", s.summary);
            let facts: Vec<String> = s
                .facts
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !facts.is_empty() {
                let _ = writeln!(out, "          facts: {}", facts.join(", "));
            }
            for c in &s.calls {
                let mark = match (
                    &c.allowed,
                    &c.error,
                    c.approval.as_ref().map(|a| a.decision),
                ) {
                    (false, _, _) => "DENIED",
                    (true, _, Some(Verdict::DryRun)) => "DRY",
                    (true, _, Some(Verdict::AwaitingApproval)) => "HELD",
                    (true, Some(_), _) => "failed",
                    (true, None, _) => "ok",
                };
                let _ = writeln!(
                    out,
                    "          {mark:<6} {}.{} {}{}",
                    c.interface,
                    c.operation,
                    c.resource,
                    match (&c.error, c.approval.as_ref().map(|a| a.decision)) {
                        // A held or refused mutation is explained below.
                        (Some(_), Some(Verdict::AwaitingApproval | Verdict::Refused)) =>
                            String::new(),
                        (Some(_), _) => format!(": {}", c.result.as_str().unwrap_or_default()),
                        (None, _) => String::new(),
                    }
                );
                if let Some(a) = &c.approval {
                    let who = match (&a.how, &a.by) {
                        (Some(how), Some(by)) => format!(" ({how}, {by})"),
                        (Some(how), None) => format!(" ({how})"),
                        _ => String::new(),
                    };
                    let verb = match a.decision {
                        Verdict::DryRun => "would",
                        Verdict::Approved => "approved:",
                        Verdict::Refused => "refused:",
                        Verdict::AwaitingApproval => "held: needs approval to",
                    };
                    let _ = writeln!(
                        out,
                        "                 {verb} {}{who}",
                        runbook_capabilities::limits::clip(a.change.clone(), 160)
                    );
                }
            }
            for l in &s.logs {
                let _ = writeln!(out, "          log    [{}] {}", l.level, l.message);
            }
            for (stream, text, truncated) in [
                ("stdout", &s.stdout, s.stdout_truncated),
                ("stderr", &s.stderr, s.stderr_truncated),
            ] {
                for line in text.lines().take(20) {
                    let _ = writeln!(out, "          {stream} {line}");
                }
                if truncated {
                    let _ = writeln!(
                        out,
                        "          {stream} (truncated: the step wrote more than the {} KiB kept)",
                        runbook_capabilities::limits::MAX_OUTPUT / 1024
                    );
                }
            }
        }
    }
    out
}
