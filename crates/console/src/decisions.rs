//! Decisions once someone is known: recorded through
//! `runbook_engine::approvals::cast` (the page's form and Slack's buttons
//! alike), then the run set going: queued for a fleet's worker, or
//! continued in this process for a state directory.

use crate::{Console, Counters};
use anyhow::{Context, Result};
use runbook_core::approval::Tally;
use runbook_engine::approvals::{Ballot, cast};
use std::sync::Arc;

/// Store reads are synchronous (NATS, files): off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a store read stopped")?
}

/// Records a decision (`approvals::cast`) and, once the change is
/// decided, sets the run going: queued for a fleet's worker, or continued
/// here. The decision, and what comes next in words; or why nothing was
/// recorded.
pub async fn record(
    c: &Arc<Console>,
    person: runbook_core::approvers::Person,
    ballot: Ballot,
) -> std::result::Result<(runbook_engine::approvals::Recorded, String), String> {
    let id = ballot.run_id.clone();
    let (store, fleet) = (c.store.clone(), c.fleet.clone());
    let cast_now = blocking(move || {
        let recorded = cast(&*store, &person, &ballot)?;
        // Recorded: whatever happens next, the answer says so.
        let decided = match &recorded.tally {
            Tally::Approved(by) => Some(by.join(", ")),
            Tally::Denied(by) => Some(by.clone()),
            Tally::Waiting { .. } => None,
        };
        // On a fleet: queued for a worker (or why it could not be).
        let queued = match (&fleet, decided) {
            (Some(fleet), Some(by)) => Some(
                runbook_fleet::parked::queue_resume(
                    fleet,
                    &ballot.run_id,
                    &ballot.step,
                    by,
                    &recorded.pending.intent,
                )
                .map(|_| ())
                .map_err(|e| format!("{e:#}")),
            ),
            _ => None,
        };
        Ok((recorded, queued))
    })
    .await;
    let (recorded, queued) = match cast_now {
        Ok(done) => done,
        Err(e) => {
            let hint = runbook_core::error::hint_of(&e)
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            return Err(format!("{e:#}{hint}"));
        }
    };
    Counters::bump(&c.counters.decisions);
    let continued = queued.is_none()
        && !matches!(recorded.tally, Tally::Waiting { .. })
        && continue_here(c, &id);
    let next = match (&recorded.tally, queued, continued) {
        (Tally::Waiting { have, need }, _, _) => format!("{} of {need} approvals", have.len()),
        (_, Some(Ok(())), _) => "decided: a worker continues the run".into(),
        (_, Some(Err(e)), _) => format!(
            "decided, but the run could not be queued for a worker ({e}): a worker's sweep queues it at its deadline, or `runbook resume {id} --nats URL` continues it now"
        ),
        (_, None, true) => "decided: the run continues".into(),
        (_, None, false) => format!("decided: `runbook resume {id}` continues the run"),
    };
    Ok((recorded, next))
}

/// Continues a decided run of a state directory in this process, on a
/// thread of its own (the store's calls are synchronous), with what it
/// was started with (`--yes`, `--approve`); the change goes ahead or not
/// as decided. Whether it was set going.
pub fn continue_here(c: &Arc<Console>, run_id: &str) -> bool {
    let Some(engine) = c.engine.clone() else {
        return false;
    };
    let (store, id) = (c.store.clone(), run_id.to_string());
    std::thread::spawn(move || {
        let started = store
            .read_run(&id)
            .ok()
            .and_then(|l| l.into_iter().find(|l| l["event"] == "run-start"))
            .unwrap_or_default();
        let policy = &started["policy"];
        let request = runbook_engine::ResumeRequest {
            run_id: id.clone(),
            approvals: runbook_engine::request::Approvals {
                all: policy["yes"] == true,
                steps: policy["approve"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect(),
                ..Default::default()
            },
            audit_log: None,
            trace: Default::default(),
        };
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return tracing::error!(run_id = id, "continuing the run: {e}"),
        };
        match rt.block_on(engine.resume(request, Arc::new(runbook_engine::request::Unwatched))) {
            Ok(outcome) => tracing::info!(run_id = id, "continued: {:?}", outcome.exit()),
            Err(e) => tracing::error!(run_id = id, "continuing the run: {e:#}"),
        }
    });
    true
}
