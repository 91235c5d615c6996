//! What stops a change that was decided on, right before it is set out
//! (after its budget and lease, before its intent; a halt is also read
//! before the lease is waited for): a halt in force for the run's
//! runbook (`runbook halt`, in the run's store: every run sharing it),
//! and a rate limit the policies keep (the change is counted in the same
//! write that allows it, so runs on several machines cannot both take
//! the last one).
//!
//! A halt stops changes to systems (those under leases and the run's
//! budget); pages and messages still go out: a halt never silences the
//! people an incident needs.

use crate::bindings::Error;
use crate::gate::Started;
use crate::guardrails::Guard;
use crate::state::StepState;
use runbook_journal::halt::{self, Halt, Stopped};
use runbook_policy::{Answer, Approval, Verdict};
use std::sync::Arc;

/// The policies' first answer on a change, and the approvals it was
/// asked with.
pub(crate) type Guarded = (Arc<Guard>, Answer, Vec<Approval>);

impl StepState {
    /// Halted, or over a rate limit: the change is not set out.
    /// `systems`: the change is to a system (not a page or a message).
    pub(crate) async fn brakes(
        &mut self,
        call: &Started,
        systems: bool,
        guarded: Option<&Guarded>,
        change: &str,
    ) -> Result<(), Error> {
        if systems {
            self.halted().await?;
        }
        let Some((guard, _, approvals)) = guarded else {
            return Ok(());
        };
        // Counted on the wall clock, whatever clock the run keeps: every
        // run sharing the store counts on the same one. The policies are
        // asked at the run's time, as they were first.
        let now = runbook_core::time::now_ms();
        let Some(counted) = guard.counted(&self.caller.step, call.interface, &call.resource, now)
        else {
            return Ok(());
        };
        let answer = guard
            .count(
                &self.caller.step,
                (call.interface, &call.resource),
                approvals.clone(),
                (counted, self.backends.clock().now_ms()),
            )
            .await;
        if answer.verdict == Verdict::Allow {
            return Ok(());
        }
        // Allowed when first asked; not now (other runs' changes were
        // counted meanwhile, or the count could not be kept): on record,
        // and refused.
        self.journal_policy(call, guard, &answer)?;
        Err(Error::Denied(
            guard.refusal(&answer, &format!("the change to {change}")),
        ))
    }

    /// A halt in force for this run's runbook: the run adds itself to the
    /// runs it stopped (in the same write that read it, so a lift cannot
    /// come between and leave it out) and stops before the change.
    pub(crate) async fn halted(&mut self) -> Result<(), Error> {
        let Some(durable) = self.durable.clone() else {
            return Ok(());
        };
        let run_id = self.caller.run_id.clone();
        let step = self.caller.step.clone();
        let (runbook, incident) = (durable.runbook.clone(), durable.incident.clone());
        let store = durable.store.clone();
        let found = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<Halt>> {
            let mut found = None;
            halt::change(&*store, &mut |halts| {
                // Each pass decides afresh (a fleet's write that lost a
                // race is read and decided again).
                found = None;
                let Some(h) = halts.stopping(&runbook).cloned() else {
                    return false;
                };
                halts.stopped.insert(
                    run_id.clone(),
                    Stopped {
                        runbook: runbook.clone(),
                        incident: incident.clone(),
                        step: step.clone(),
                        at_ms: runbook_core::time::now_ms(),
                    },
                );
                found = Some(h);
                true
            })?;
            Ok(found)
        })
        .await;
        match found {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(h))) => {
                let why = format!(
                    "halted {}; nothing was changed: `runbook resume-all` lifts the halt and continues the run",
                    h.describe()
                );
                self.shared.trail().halted = Some(why.clone());
                Err(Error::Unavailable(why))
            }
            Ok(Err(e)) => Err(self.block(format!(
                "whether a halt is in force could not be read ({e:#}); nothing was changed"
            ))),
            Err(e) => Err(self.block(format!(
                "whether a halt is in force could not be read ({e}); nothing was changed"
            ))),
        }
    }
}
