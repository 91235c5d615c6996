//! Runs a halt stopped, continued by the fleet's workers once `runbook
//! resume-all` lifts it: each queued as a request to continue (no
//! approval is recorded: what the run was submitted with still holds, and
//! a change under an approval rule still waits for its people).

use super::nats::Fleet;
use super::request::{Request, publish};
use anyhow::Result;
use runbook_journal::halt::Stopped;

/// Queues `runs` (freed by the lift made at `lift_ms`) to be continued;
/// returns those that could not be queued, with why.
pub fn continue_runs(
    fleet: &Fleet,
    runs: &[(String, Stopped)],
    by: &str,
    lift_ms: u64,
) -> Vec<(String, String)> {
    let mut failed = Vec::new();
    for (run_id, stopped) in runs {
        let request = Request::Resume {
            run_id: run_id.clone(),
            step: stopped.step.clone(),
            by: format!("resume-all by {by}"),
        };
        // One id per lift: a run halted and freed again later is queued
        // again, a retried publish of this one is not.
        let id = format!("resume-all:{run_id}:{lift_ms}");
        let queued: Result<_> = publish(fleet, &request, &id);
        if let Err(e) = queued {
            failed.push((run_id.clone(), format!("{e:#}")));
        }
    }
    failed
}
