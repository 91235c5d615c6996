//! Executes a [`Plan`]: one fresh, sandboxed instance per step, routed by
//! outcome labels until the run ends `resolved`, `escalated` or failed.
//!
//! A step is a future on tokio. Its deadline is a timer around the whole
//! step, host calls included: when it fires, the step's future is dropped
//! and nothing it started can reach a backend or the audit log afterwards.
//! Guest code yields at every epoch tick, so a busy step cannot hold a
//! worker thread from other runs' steps, and the epoch check ends guest
//! code that runs past the deadline. Time spent asking a person to approve
//! a mutation moves the deadline.

use crate::plan::{Plan, PlannedStep};
use crate::report::{Report, Status, StepReport};
use crate::run_config::RunConfig;
use crate::runtime::Runtime;
use crate::step::run_step_after;
use runbook_core::runbook::{ESCALATED, RESOLVED};
use runbook_core::time::rfc3339 as time;
use std::time::{Instant, SystemTime};

/// A runbook that loops (e.g. retry routes) still ends.
const MAX_STEPS: usize = 64;

/// Where a run goes after a step.
enum Route {
    Next(String),
    End(Status, Option<String>),
}

fn route(step: &PlannedStep, report: &StepReport) -> Route {
    let id = &report.id;
    if let Some(halted) = &report.halted {
        return Route::End(
            Status::Halted,
            Some(format!("step `{id}` stopped before its change: {halted}")),
        );
    }
    if let Some(held) = &report.blocked {
        return Route::End(
            Status::Blocked,
            Some(format!("step `{id}` could not make its change: {held}")),
        );
    }
    if let Some(change) = &report.awaiting_approval {
        let run = report_run_id(report);
        return Route::End(
            Status::AwaitingApproval,
            Some(match (&report.held_by, &step.def.approval) {
                (Some(held), _) => format!(
                    "step `{id}` stopped before it could {change}: {held}; each approver decides with `runbook approve {run} {id} --as NAME` (with their token) or in the console (`--yes` does not decide it); once decided, a fleet's worker continues the run (in a state directory: `runbook resume {run}`, or the console)"
                ),
                (None, Some(rule)) => format!(
                    "step `{id}` stopped before it could {change}: it needs {}; each approver decides with `runbook approve {run} {id} --as NAME` (with their token) or in the console; once decided, a fleet's worker continues the run (in a state directory: `runbook resume {run}`, or the console)",
                    rule.describe()
                ),
                (None, None) => format!(
                    "step `{id}` stopped before it could {change}: nobody approved it; continue with `runbook resume {run} --approve {id}` (or `--yes`), or from a terminal to be asked"
                ),
            }),
        );
    }
    match report.next.as_deref() {
        Some(RESOLVED) => Route::End(Status::Resolved, None),
        Some(ESCALATED) => Route::End(
            Status::Escalated,
            Some(format!("step `{id}` ended `{}`", report.outcome)),
        ),
        Some(n) => Route::Next(n.to_string()),
        None => {
            let routed: Vec<&str> = step.def.on.keys().map(String::as_str).collect();
            Route::End(
                Status::Failed,
                Some(format!(
                    "step `{id}` ended `{}`, which the runbook does not route (it routes {})",
                    report.outcome,
                    routed.join(", ")
                )),
            )
        }
    }
}

pub async fn execute(plan: &Plan, runtime: &Runtime, cfg: &RunConfig) -> Report {
    let wall = Instant::now();
    let started_ms = cfg.backends.clock().now_ms();
    let mut steps: Vec<StepReport> = Vec::new();
    let mut current = plan.steps[0].def.id.to_string();
    let mut ended = None;
    // Resuming: the steps that ended are replayed from the journal, not run.
    if let Some(d) = &cfg.durable {
        for r in &d.replay.ended {
            let Ok(report) = serde_json::from_value::<StepReport>(r.clone()) else {
                continue;
            };
            let Some(step) = plan.step(&report.id) else {
                continue;
            };
            if let Some(on_step) = &cfg.on_step {
                on_step(&report);
            }
            let next = route(step, &report);
            steps.push(report);
            match next {
                Route::Next(n) => current = n,
                Route::End(status, reason) => ended = Some((status, reason)),
            }
        }
    }
    let (status, reason) = loop {
        if let Some(end) = ended.take() {
            break end;
        }
        if steps.len() >= MAX_STEPS {
            break (
                Status::Failed,
                Some(format!(
                    "the run took more than {MAX_STEPS} steps; check the runbook's routes for a loop"
                )),
            );
        }
        let Some(step) = plan.step(&current) else {
            break (
                Status::Failed,
                Some(format!("the runbook has no step `{current}`")),
            );
        };
        if let Err(e) = cfg.journal("step-start", || {
            serde_json::json!({
                "step": step.def.id,
                "plugin": step.plugin.name(),
                "plugin_digest": step.plugin.digest,
            })
        }) {
            break unrecorded(&e, &format!("before step `{}`", step.def.id));
        }
        // Clocks read for the step's span only when there is one.
        let began = cfg
            .trace
            .as_ref()
            .map(|_| (Instant::now(), SystemTime::now()));
        let mut report = run_step_after(step, runtime, cfg, &steps).await;
        let next = step.def.on.get(&report.outcome).cloned();
        report.next = next.clone();
        if let (Some(trace), Some((began, began_at))) = (&cfg.trace, began) {
            // One clock for the step and its calls (the wall clock may be
            // stepped meanwhile).
            trace.step(&report, began, began_at, began_at + began.elapsed());
        }
        let ended = cfg.journal("step-end", || {
            serde_json::json!({
                "step": report.id,
                "outcome": report.outcome,
                "next": next,
                "report": report,
            })
        });
        if let Some(on_step) = &cfg.on_step {
            on_step(&report);
        }
        if let Some(audit) = &cfg.audit {
            audit.event(
                &cfg.run_id,
                "step-end",
                serde_json::json!({
                    "step": report.id,
                    "plugin": report.plugin,
                    "plugin_digest": report.plugin_digest,
                    "outcome": report.outcome,
                    "summary": report.summary,
                    "next": next,
                }),
            );
        }
        let next = route(step, &report);
        let id = report.id.clone();
        steps.push(report);
        // A line the journal could not take, in the step (a change's
        // result) or at its end: nothing more is changed.
        if let Err(e) = ended {
            break unrecorded(&e, &format!("after step `{id}`"));
        }
        match next {
            Route::Next(n) => current = n,
            Route::End(status, reason) => break (status, reason),
        }
    };
    let finished_ms = cfg.backends.clock().now_ms();
    let report = Report {
        runbook_id: plan.runbook.runbook_id.clone(),
        title: plan.runbook.title.clone(),
        run_id: cfg.run_id.clone(),
        mode: cfg.mode.clone(),
        status,
        reason,
        started_at: time(started_ms),
        finished_at: time(finished_ms),
        elapsed_ms: finished_ms.saturating_sub(started_ms),
        wall_ms: wall.elapsed().as_millis() as u64,
        steps,
        escalation: plan.runbook.escalation.clone(),
        mutations: crate::report::Mutations {
            used: cfg.budget.used(),
            allowed: cfg.budget.allowed,
        },
        end_recorded: false,
        trace_id: cfg.trace.as_ref().map(|t| t.trace_id()),
    };
    let mut report = report;
    let end = cfg.journal("run-end", || {
        serde_json::json!({
            "status": report.status,
            "reason": report.reason,
            "mutations": report.mutations,
            // Run time (simulated under `--sim`): `show` tells the run as
            // it was told.
            "mode": report.mode,
            "started_at": report.started_at,
            "finished_at": report.finished_at,
            "elapsed_ms": report.elapsed_ms,
            "wall_ms": report.wall_ms,
        })
    });
    report.end_recorded = end.is_ok() && cfg.durable.is_some();
    if let Err(e) = end
        && report.status != Status::Unrecorded
    {
        let was = report.status.word();
        let (status, reason) = unrecorded(&e, &format!("as the run ended {was}"));
        report.status = status;
        report.reason = reason;
    }
    if let Some(audit) = &cfg.audit {
        audit.event(
            &cfg.run_id,
            "run-end",
            serde_json::json!({
                "runbook_id": report.runbook_id,
                "status": report.status,
                "reason": report.reason,
            }),
        );
    }
    report
}

/// The end of a run whose journal could not take a line.
fn unrecorded(e: &anyhow::Error, when: &str) -> (Status, Option<String>) {
    (
        Status::Unrecorded,
        Some(format!(
            "{e:#} ({when}); the run stopped before its next change: free the journal's disk or store, then continue with `runbook resume`"
        )),
    )
}

fn report_run_id(report: &StepReport) -> &str {
    &report.run_id
}
