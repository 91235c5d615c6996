//! The mutation protocol: a change is previewed, approved, budgeted,
//! leased and journaled (intent first, fsync'd) before it reaches its
//! backend, and its result journaled after; a resumed run gets a change it
//! already made from the journal, and one whose result is unknown is
//! looked for in the backend before anything is issued again.

use crate::bindings::Error;
use crate::capability::Capability;
use crate::durable::{LEASE_WAIT, changed_since, injected, replayed};
use crate::gate::Started;
use crate::state::StepState;
use runbook_core::approval::{Decision, Verdict};
use runbook_core::grants::Access;
use runbook_journal::audit::CallRecord;
use runbook_journal::replay::Done;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Instant;

/// How a change waiting for approvals the policies ask for is decided on.
const POLICY: &str = "policy";

impl StepState {
    /// Every mutation: grant, deadline, budget; then `preview` says what
    /// would change and what the step would be told, the approver decides,
    /// and only an approved change reaches `apply`, which gets the
    /// previewed value: what was approved is what is done.
    ///
    /// In a durable run, before `apply`: the run's mutation budget is
    /// checked, a lease on the resource is taken (held until the step
    /// ends), and the intent is journaled (fsync'd); after it, its result.
    /// A step run again on resume gets a change it already made from the
    /// journal, and a change with an intent but no result is first looked
    /// for in the backend (`in_effect`), never issued twice.
    #[allow(
        clippy::too_many_arguments,
        reason = "each closure is one phase of a change"
    )]
    pub(crate) async fn mutate<C, R, P, PFut, A, AFut, V, VFut>(
        &mut self,
        _capability: C,
        operation: &'static str,
        resource: &str,
        args: serde_json::Value,
        preview: P,
        apply: A,
        in_effect: V,
    ) -> wasmtime::Result<Result<R, Error>>
    where
        C: Capability,
        R: Serialize + serde::de::DeserializeOwned + Clone + Send,
        P: FnOnce(Arc<C::Backend>, Instant) -> PFut + Send,
        PFut: Future<Output = Result<(String, R), Error>> + Send,
        A: FnOnce(Arc<C::Backend>, Instant, R) -> AFut + Send,
        AFut: Future<Output = Result<R, Error>> + Send,
        V: FnOnce(Arc<C::Backend>, Instant, R) -> VFut + Send,
        VFut: Future<Output = Result<bool, Error>> + Send,
    {
        let start = self.start(C::INTERFACE, operation, Access::Mutate, resource, args)?;
        let backend = match self.admit::<C>(&start) {
            Ok(b) => b,
            Err(e) => {
                let result = Err(e);
                self.record(start, &result, None)?;
                return Ok(result);
            }
        };
        // Made (or perhaps made) by this step before the run was resumed?
        match self.journaled(&start) {
            Some(Done::Applied(result)) => {
                let result = match serde_json::from_value::<R>(result) {
                    Ok(r) => Ok(r),
                    // Made, but its result is not one this host can read:
                    // never made again.
                    Err(e) => Err(self.block(format!(
                        "the journal says this change was made, but its result cannot be read ({e}); nothing was changed again"
                    ))),
                };
                let how = replayed("applied before the run was resumed");
                self.record(start, &result, Some(how))?;
                return Ok(result);
            }
            Some(Done::Unknown { would }) => {
                let checked = match serde_json::from_value::<R>(would.clone()) {
                    Err(e) => Err(Error::Invalid(format!(
                        "its journaled preview cannot be read ({e})"
                    ))),
                    Ok(would) => match injected("backend-check").await {
                        Err(e) => Err(e),
                        Ok(()) => in_effect(backend.clone(), self.deadline(), would.clone())
                            .await
                            .map(|made| made.then_some(would)),
                    },
                };
                match checked {
                    // In effect: it was made; the journal says so now.
                    Ok(Some(would)) => {
                        let result = Ok(would);
                        if let Err(e) = self.journal_result(&start, None, &result, "reconciled") {
                            let result = Err(e);
                            self.record(start, &result, None)?;
                            return Ok(result);
                        }
                        let how = replayed("found in effect when the run was resumed");
                        self.record(start, &result, Some(how))?;
                        return Ok(result);
                    }
                    // Not in effect: it never reached the backend (or was
                    // undone); it goes through the whole protocol again.
                    Ok(None) => {}
                    // Unknown: never issued twice, never guessed.
                    Err(e) => {
                        let result = Err(self.block(format!(
                            "a change set out before the run stopped may or may not have been made (the journal has its intent, no result), and checking `{}` failed: {}; nothing was issued again: check it, then `runbook resume {}` again",
                            start.resource,
                            e.text(),
                            self.caller.run_id
                        )));
                        self.record(start, &result, None)?;
                        return Ok(result);
                    }
                }
            }
            None => {}
        }
        let (change, would) = match preview(backend.clone(), self.deadline()).await {
            Ok(p) => p,
            Err(e) => {
                let result = Err(e);
                self.record(start, &result, None)?;
                return Ok(result);
            }
        };
        // A change that waited for an approval: the approval is for the
        // world as it was previewed then. Moved since (someone did it by
        // hand, another run): nothing is changed, and the evidence is told.
        if let Some(then) = self.awaited(&start) {
            let now = serde_json::to_value(&would).unwrap_or_default();
            if now != then.would {
                let result = Err(self.block(format!(
                    "the world moved while this change waited for an approval: it was to {} and would now {change}; nothing was changed: look at `{}`, then start a new run of the incident if a change is still needed",
                    then.change, start.resource
                )));
                self.record(start, &result, None)?;
                return Ok(result);
            }
        }
        // The change's digest, as its `awaiting` line would name it: a step
        // under an approval rule is decided for that very change.
        let intent = runbook_core::approval::intent_digest(&serde_json::json!({
            "step": self.caller.step,
            "interface": start.interface,
            "operation": start.operation,
            "resource": start.resource,
            "index": self.index_of(&start),
            "change": change,
            "would": would,
        }));
        // The organisation's policies, told who approved this very change:
        // allowed (the approver decides as ever), forbidden, or waiting for
        // people under the rule the policies imply. Journaled either way.
        let guarded: Option<crate::brakes::Guarded> = match self.guard.clone() {
            None => None,
            Some(guard) => {
                let approvals = self.approver.approved(&self.caller.step, &intent);
                let now = self.backends.clock().now_ms();
                // The changes counted so far, if the policies read them
                // (asked again, and counted, right before the change).
                let counted = guard.counted(
                    &self.caller.step,
                    start.interface,
                    &start.resource,
                    runbook_core::time::now_ms(),
                );
                let recent = match counted {
                    None => Ok(Default::default()),
                    Some(c) => guard.recent(c).await,
                };
                let answer = match recent {
                    Ok(recent) => {
                        guard
                            .ask_off_fiber(
                                &self.caller.step,
                                start.interface,
                                Access::Mutate,
                                &start.resource,
                                approvals.clone(),
                                (now, recent),
                            )
                            .await
                    }
                    Err(e) => runbook_policy::Answer {
                        verdict: runbook_policy::Verdict::Forbid,
                        policies: vec![format!(
                            "the changes counted for rate limits could not be read: {e}"
                        )],
                        context: serde_json::Value::Null,
                    },
                };
                if let Err(e) = self.journal_policy(&start, &guard, &answer) {
                    let result = Err(e);
                    self.record(start, &result, None)?;
                    return Ok(result);
                }
                Some((guard, answer, approvals))
            }
        };
        if let Some((guard, answer, _)) = &guarded
            && answer.verdict == runbook_policy::Verdict::Forbid
        {
            let result = Err(Error::Denied(
                guard.refusal(answer, &format!("the change to {change}")),
            ));
            self.record(start, &result, None)?;
            return Ok(result);
        }
        self.shared.asking.store(true, SeqCst);
        let asked = Instant::now();
        let held = guarded
            .as_ref()
            .is_some_and(|(_, a, _)| a.verdict != runbook_policy::Verdict::Allow);
        let decided = self.approver.decided(&self.caller.step, &intent);
        if let Some((guard, answer, _)) = &guarded
            && held
            && decided == Some(Ok(()))
        {
            // People approved it under the rule, and the policies still
            // hold it (they ask for someone the rule did not): refused, not
            // parked again for decisions that are already in.
            self.shared.asking.store(false, SeqCst);
            let result = Err(Error::Denied(format!(
                "{}; the approvals given do not meet it",
                guard.refusal(answer, &format!("the change to {change}"))
            )));
            self.record(start, &result, None)?;
            return Ok(result);
        }
        let decision = match decided {
            // Held and denied (by a person, or by the rule's timeout).
            Some(Err(by)) if held => Decision {
                decision: Verdict::Refused,
                how: Some(
                    if by == runbook_core::approval::TIMEOUT {
                        by.as_str()
                    } else {
                        "approvers"
                    }
                    .to_string(),
                ),
                by: Some(by),
                change,
            },
            // Held, nobody has decided yet, and the run is real: it waits
            // for people. (A dry run records what it would do.)
            None if held && !self.approver.dry_run() => Decision {
                decision: Verdict::AwaitingApproval,
                how: Some(POLICY.to_string()),
                by: None,
                change,
            },
            _ => {
                self.approver
                    .decide(&self.caller.step, change, &intent)
                    .await
            }
        };
        // Time spent waiting for a person is not the step's time.
        self.shared.extend(asked.elapsed());
        self.shared.asking.store(false, SeqCst);
        let result = match decision.decision {
            Verdict::Approved => match self
                .before_applying(
                    &start,
                    &decision,
                    &would,
                    (C::BLAST_RADIUS, guarded.as_ref()),
                )
                .await
            {
                // Writing the intent may have taken long (a slow store):
                // the lease is looked at again right before the change.
                Ok(intent) => match self.leases.iter().find_map(|l| l.lost()) {
                    Some(lost) => {
                        let result = Err(self.block(format!(
                            "the lease on `{}` {lost} while the change's intent was written; nothing was changed",
                            start.resource
                        )));
                        // Journaled as not made (or the journal failed, and
                        // the run stops): resume goes through it afresh.
                        let _unrecorded = self.journal_result(&start, intent, &result, "applied");
                        result
                    }
                    None => {
                        self.begin_applying(&start, &decision)?;
                        let result = match injected("backend-apply").await {
                            Ok(()) => apply(backend, self.deadline(), would).await,
                            Err(e) => Err(e),
                        };
                        injected("backend-applied").await?;
                        // Not journaled: the step is told what happened, and
                        // the run stops before its next change (the journal
                        // is failed); resume finds the intent and checks.
                        let _unrecorded = self.journal_result(&start, intent, &result, "applied");
                        result
                    }
                },
                Err(e) => Err(e),
            },
            Verdict::DryRun => Ok(would),
            Verdict::Refused => Err(Error::Denied(
                match (decision.how.as_deref(), &decision.by) {
                    (Some("approvers"), Some(by)) => {
                        format!("`{by}` denied the change to {}", decision.change)
                    }
                    (Some(runbook_core::approval::TIMEOUT), _) => format!(
                        "nobody approved the change to {} in time; its rule denies it then",
                        decision.change
                    ),
                    _ => format!("the operator refused to {}", decision.change),
                },
            )),
            Verdict::AwaitingApproval => {
                // The picture the approval will be for: a resumed run
                // applies the change only if it still holds.
                if let Some(durable) = &self.durable {
                    let written = durable.journal.record(
                        "awaiting",
                        serde_json::json!({
                            "step": self.caller.step,
                            "interface": start.interface,
                            "operation": start.operation,
                            "resource": start.resource,
                            "index": self.index_of(&start),
                            "change": decision.change,
                            "would": would,
                        }),
                    );
                    if let Err(e) = written {
                        let result = Err(self.unrecorded(&e));
                        self.record(start, &result, Some(decision))?;
                        return Ok(result);
                    }
                }
                self.shared.trail().awaiting = Some(decision.change.clone());
                if let Some((guard, answer, _)) = &guarded
                    && decision.how.as_deref() == Some(POLICY)
                {
                    self.shared.trail().held_by = Some(guard.refusal(answer, "it"));
                }
                Err(Error::Denied(match &guarded {
                    Some((guard, answer, _)) if decision.how.as_deref() == Some(POLICY) => {
                        guard.refusal(answer, &format!("the change to {}", decision.change))
                    }
                    _ => format!("awaiting approval to {}", decision.change),
                }))
            }
        };
        self.record(start, &result, Some(decision))?;
        Ok(result)
    }

    /// The policies' decision on a change, before anything else of it is
    /// journaled: decision, the policies that made it, the rule of
    /// approvals it asks for, the context, the policy directory's digest.
    pub(crate) fn journal_policy(
        &self,
        start: &Started,
        guard: &crate::guardrails::Guard,
        answer: &runbook_policy::Answer,
    ) -> Result<(), Error> {
        let Some(durable) = &self.durable else {
            return Ok(());
        };
        let mut fields = serde_json::to_value(answer).unwrap_or_default();
        fields["step"] = self.caller.step.clone().into();
        fields["interface"] = start.interface.wit_name().into();
        fields["operation"] = start.operation.into();
        fields["resource"] = start.resource.clone().into();
        fields["index"] = self.index_of(start).into();
        fields["policies_sha256"] = guard.policies.digest.clone().into();
        durable
            .journal
            .record("policy", fields)
            .map(|_| ())
            .map_err(|e| self.unrecorded(&e))
    }

    /// What the journal of a resumed run says this call already did: the
    /// n-th call to this operation on this resource in this step.
    fn journaled(&mut self, call: &Started) -> Option<Done> {
        let key = (
            call.interface.wit_name().to_string(),
            call.operation.to_string(),
            call.resource.clone(),
        );
        let n = self.occurrences.entry(key.clone()).or_insert(0);
        let index = *n;
        *n += 1;
        let durable = self.durable.as_ref()?;
        durable
            .replay
            .mutations
            .get(&(self.caller.step.clone(), key.0, key.1, key.2, index))
            .cloned()
    }

    /// Which such call (same operation, same resource) in this step the
    /// current one is: 0, 1, ... (counted by `journaled`, which each call
    /// passes first).
    fn index_of(&self, call: &Started) -> usize {
        let key = (
            call.interface.wit_name().to_string(),
            call.operation.to_string(),
            call.resource.clone(),
        );
        self.occurrences
            .get(&key)
            .map_or(0, |n| n.saturating_sub(1))
    }

    /// What this call previewed when the run stopped to wait for an
    /// approval, if it did (this very call: same step, operation,
    /// resource and index).
    fn awaited(&self, call: &Started) -> Option<runbook_journal::replay::Awaited> {
        let durable = self.durable.as_ref()?;
        durable
            .replay
            .awaited
            .get(&(
                self.caller.step.clone(),
                call.interface.wit_name().to_string(),
                call.operation.to_string(),
                call.resource.clone(),
                self.index_of(call),
            ))
            .cloned()
    }

    /// A change that must not go ahead: the step's report says why, and
    /// the run ends blocked.
    pub(crate) fn block(&self, why: String) -> Error {
        self.shared.trail().blocked = Some(why.clone());
        Error::Unavailable(format!("blocked: {why}"))
    }

    /// A journal line that could not be written: the step is told, and
    /// the run stops before its next change.
    fn unrecorded(&self, e: &anyhow::Error) -> Error {
        Error::Unavailable(format!("{e:#}; the run stops before its next change"))
    }

    /// Deadline, the run's mutation budget, the lease, the brakes (a halt,
    /// a rate limit: right before the change is set out), then the intent
    /// in the journal (its sequence number, to tie the result to it).
    async fn before_applying<R: Serialize>(
        &mut self,
        call: &Started,
        decision: &Decision,
        would: &R,
        (counted, guarded): (bool, Option<&crate::brakes::Guarded>),
    ) -> Result<Option<u64>, Error> {
        self.before_deadline()?;
        let budget = counted.then(|| self.budget.clone());
        if let Some(b) = &budget {
            b.take()?;
        }
        let Some(durable) = self.durable.clone() else {
            // No journal, no store: the brakes are this process's.
            if let Err(e) = self.brakes(call, counted, guarded, &decision.change).await {
                if let Some(b) = &budget {
                    b.give_back();
                }
                return Err(e);
            }
            return Ok(None);
        };
        let mut token = None;
        // A halt in force now: stopped before it waits for a lease (and
        // before its holding the lease makes others' pictures stale). It
        // is read again right before the intent.
        if counted && let Err(e) = self.halted().await {
            if let Some(b) = &budget {
                b.give_back();
            }
            return Err(e);
        }
        // Paging and messaging change no system: no lease to wait for.
        if durable.leases && counted {
            let what = durable
                .identities
                .as_ref()
                .and_then(|ids| ids.identity(call.interface, &call.resource))
                .unwrap_or_else(|| format!("{}:{}", call.interface, call.resource));
            let (store, holder) = (durable.store.clone(), durable.holder.clone());
            let wait = self
                .deadline()
                .saturating_duration_since(Instant::now())
                .min(LEASE_WAIT);
            let leased =
                tokio::task::spawn_blocking(move || store.lease(&what, &holder, wait)).await;
            match leased {
                Ok(Ok(lease)) => {
                    if let Some(stale) = changed_since(&*lease, &durable) {
                        if let Some(b) = &budget {
                            b.give_back();
                        }
                        self.shared.trail().blocked = Some(stale.clone());
                        return Err(Error::Unavailable(format!("blocked: {stale}")));
                    }
                    token = Some(lease.fencing_token());
                    self.leases.push(lease);
                }
                Ok(Err(held)) => {
                    if let Some(b) = &budget {
                        b.give_back();
                    }
                    self.shared.trail().blocked = Some(held.to_string());
                    return Err(Error::Unavailable(format!("blocked: {held}")));
                }
                Err(e) => {
                    if let Some(b) = &budget {
                        b.give_back();
                    }
                    // Whether it was taken is unknown (the task failed):
                    // nothing is changed.
                    return Err(self.block(format!("taking the lease failed: {e}")));
                }
            }
        }
        // Nothing is changed under a lease that may have lapsed.
        if let Some(lost) = self.leases.iter().find_map(|l| l.lost()) {
            if let Some(b) = &budget {
                b.give_back();
            }
            return Err(self.block(format!(
                "the lease on `{}` {lost}; nothing was changed",
                call.resource
            )));
        }
        // Last before the intent: a halt read now, a change counted now, is
        // one that is set out (nothing but the intent's write comes between).
        if let Err(e) = self.brakes(call, counted, guarded, &decision.change).await {
            if let Some(b) = &budget {
                b.give_back();
            }
            return Err(e);
        }
        // Nothing is changed that the journal does not have first.
        let written = durable.journal.record(
            "intent",
            serde_json::json!({
                "step": self.caller.step,
                "plugin": self.caller.plugin,
                "interface": call.interface,
                "operation": call.operation,
                "resource": call.resource,
                // Which such call in the step this is, as resume counts
                // them: a call replayed from the journal writes no intent,
                // so intents alone cannot be counted.
                "index": self.index_of(call),
                "args": call.args,
                "change": decision.change,
                "would": would,
                "approval": decision,
                "fencing_token": token,
            }),
        );
        match written {
            Ok(seq) => Ok(Some(seq)),
            Err(e) => {
                if let Some(b) = &budget {
                    b.give_back();
                }
                Err(Error::Unavailable(format!(
                    "the change's intent could not be written to the journal `{}`, so nothing was changed: {e:#}",
                    durable.journal.location()
                )))
            }
        }
    }

    /// The result of a change, journaled against its intent. An error:
    /// it could not be written (the journal takes no more lines).
    fn journal_result<R: Serialize>(
        &self,
        call: &Started,
        intent: Option<u64>,
        result: &Result<R, Error>,
        how: &str,
    ) -> Result<(), Error> {
        let Some(durable) = &self.durable else {
            return Ok(());
        };
        let intent = match intent {
            Some(i) => Some(i),
            // Reconciled on resume: the intent is the journaled one.
            None => durable
                .journal_intent(
                    &self.caller.step,
                    call.operation,
                    &call.resource,
                    self.index_of(call),
                )
                .map_err(|e| self.unrecorded(&e))?,
        };
        let (event, fields) = match result {
            Ok(r) => (
                "applied",
                serde_json::json!({ "result": serde_json::to_value(r).unwrap_or_default(), "how": how }),
            ),
            Err(e) => (
                "failed",
                serde_json::json!({ "error": e.kind(), "message": e.text() }),
            ),
        };
        let mut fields = fields;
        fields["intent"] = intent.into();
        fields["step"] = self.caller.step.clone().into();
        fields["resource"] = call.resource.clone().into();
        durable
            .journal
            .record(event, fields)
            .map(|_| ())
            .map_err(|e| self.unrecorded(&e))
    }

    /// Before an approved change is applied: the audit log gets the intent,
    /// and the step's trail a record that says "interrupted" until the
    /// change returns, so a step stopped mid-change leaves the mark.
    fn begin_applying(&mut self, call: &Started, decision: &Decision) -> wasmtime::Result<()> {
        if let Some(audit) = &self.audit {
            audit.event(
                &self.caller.run_id,
                "intent",
                serde_json::json!({
                    "step": self.caller.step,
                    "plugin": self.caller.plugin,
                    "plugin_digest": self.caller.plugin_digest,
                    "interface": call.interface,
                    "operation": call.operation,
                    "resource": call.resource,
                    "change": decision.change,
                    "approval": decision,
                }),
            );
        }
        let pending = CallRecord {
            interface: call.interface,
            operation: call.operation.to_string(),
            access: call.access,
            resource: call.resource.clone(),
            args: call.args.clone(),
            allowed: true,
            result: serde_json::Value::String(
                "interrupted: the step was stopped while the change was being applied; it may or may not have taken effect"
                    .into(),
            ),
            error: Some("interrupted".into()),
            approval: Some(decision.clone()),
            at_ms: call.at_ms,
            duration_us: 0,
            began: Some(call.started),
        };
        let mut trail = self.shared.trail();
        trail.applying = Some(trail.calls.len());
        trail.calls.push(pending);
        Ok(())
    }
}
