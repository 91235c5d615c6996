//! After a run: acknowledge it, deliver it again later, or park it for an
//! approval (and page who approves), from how it went and what its
//! journal says.

use super::{Outcome, Worker};
use crate::{page, parked};
use anyhow::Result;
use runbook_core::exit::Exit;
use runbook_engine::Outcome as RunOutcome;
use runbook_engine::report::Status;
use runbook_journal::holder::Held;
use runbook_journal::replay::finished;
use runbook_journal::store::Store;
use std::sync::atomic::Ordering;

impl Worker {
    /// Acknowledge, retry or park, from how the run went.
    /// `env`: the run's environment file (who is paged when it parks).
    pub(super) fn after(
        &self,
        incident: &str,
        exit: Result<RunOutcome>,
        timeout_s: Option<u64>,
        env: Option<&std::path::Path>,
    ) -> Outcome {
        // It ended, and its end is in the journal (the report says it
        // wrote its run-end; a run the host panicked in has none, and is
        // continued below): nothing to read back.
        if let Ok(RunOutcome::Ran(ran)) = &exit
            && ran.report.end_recorded
            && matches!(
                ran.report.status,
                Status::Resolved
                    | Status::Escalated
                    | Status::Failed
                    | Status::Blocked
                    // On the halt's list of runs it stopped: `runbook
                    // resume-all` queues it again.
                    | Status::Halted
            )
        {
            let exit = ran.report.status;
            let run_id = &ran.report.run_id;
            tracing::info!(incident, run_id, ?exit, "run ended");
            self.counters.completed.fetch_add(1, Ordering::Relaxed);
            return Outcome::Done;
        }
        let mut held_now = false;
        let exit = match exit {
            Ok(RunOutcome::Blocked(e)) => {
                held_now = Held::in_chain(&e);
                let hint = runbook_core::error::hint_of(&e).unwrap_or_default();
                tracing::warn!(incident, hint, "blocked: {e:#}");
                Exit::Blocked
            }
            Ok(outcome) => {
                if let RunOutcome::Ran(ran) = &outcome
                    && ran.report.status == runbook_engine::report::Status::Blocked
                {
                    let reason = ran.report.reason.as_deref().unwrap_or_default();
                    tracing::warn!(incident, "blocked: {reason}");
                }
                outcome.exit()
            }
            Err(e) => {
                return if Held::in_chain(&e) {
                    Outcome::Later
                } else {
                    Outcome::Refused(e)
                };
            }
        };
        let last = self
            .store
            .incident_runs(incident)
            .ok()
            .and_then(|r| r.last().cloned());
        let lines = last
            .as_ref()
            .and_then(|id| self.store.read_run(id).ok())
            .unwrap_or_default();
        // Held by another process (or this one: a page being journaled,
        // an escalation sweep) while it is unfinished or parked: deliver the
        // request again, never drop it (an approved run would not go on).
        // A hold that does not clear (the incident was handled already)
        // is acknowledged below.
        // A halted run is waiting too: `resume-all`'s request for it must
        // not be acknowledged unrun while the run is still finishing.
        let parked_or_running = finished(&lines)
            .is_none_or(|end| end["status"] == "awaiting-approval" || end["status"] == "halted");
        if held_now && parked_or_running {
            tracing::warn!(incident, "held elsewhere for now: to be tried again");
            return Outcome::Later;
        }
        match exit {
            // Blocked before it began: the incident's run is elsewhere.
            Exit::Blocked if finished(&lines).is_none() => Outcome::Later,
            Exit::AwaitingApproval => {
                let (Some(run_id), Some((step, change))) = (last, parked::waiting_step(&lines))
                else {
                    return Outcome::Done;
                };
                // A step's approval rule has the last word on how long
                // its change waits, and what happens then.
                let rule = runbook_journal::approvals::rules(&lines).remove(&step);
                // A rule's time runs from the first parking for the change.
                let left = |t: std::time::Duration| {
                    let since = runbook_journal::approvals::pending(&lines)
                        .map_or_else(runbook_core::time::now_ms, |p| p.since_ms);
                    let ends = since.saturating_add(t.as_millis() as u64);
                    ends.saturating_sub(runbook_core::time::now_ms())
                        .div_ceil(1000)
                };
                let timeout = rule
                    .as_ref()
                    .and_then(|r| r.timeout())
                    .map(left)
                    .or(timeout_s)
                    .unwrap_or(self.settings.approval_timeout.as_secs());
                let intent = rule
                    .as_ref()
                    .and(runbook_journal::approvals::pending(&lines))
                    .map(|p| p.intent);
                let deny =
                    rule.is_some_and(|r| r.on_timeout == runbook_core::approval::OnTimeout::Deny);
                // The line that parked it names its page (a key of this
                // parking's own).
                let Some(parking) = finished(&lines).and_then(|e| e["seq"].as_u64()) else {
                    tracing::error!(
                        run_id,
                        "its parking line has no sequence: to be tried again"
                    );
                    return Outcome::Later;
                };
                let plan = page::planned(env, &run_id, &step, parking);
                match parked::park(
                    &self.store,
                    &run_id,
                    incident,
                    (&step, &change, intent.as_deref()),
                    (timeout, deny),
                    plan.clone(),
                ) {
                    Ok(entry) => {
                        if let Some(plan) = plan {
                            let store = self.store.clone();
                            tokio::spawn(page::deliver(store, plan, entry, page::Event::Parked));
                        }
                    }
                    Err(e) => {
                        tracing::error!(run_id, "parking: {e:#}");
                        return Outcome::Later;
                    }
                }
                self.counters.parked.fetch_add(1, Ordering::Relaxed);
                Outcome::Done
            }
            // It stopped without its end in the journal (NATS went away
            // mid-run): it continues from there on the next delivery.
            exit if last.is_some() && finished(&lines).is_none() => {
                tracing::warn!(
                    incident,
                    ?exit,
                    "the run stopped without its end journaled: to be continued"
                );
                Outcome::Later
            }
            exit => {
                tracing::info!(
                    incident,
                    run_id = last.unwrap_or_default(),
                    ?exit,
                    "run ended"
                );
                self.counters.completed.fetch_add(1, Ordering::Relaxed);
                Outcome::Done
            }
        }
    }
}
