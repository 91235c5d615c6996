//! Runs parked for an approval: a worker that reaches a change nobody
//! approved ends the run there (its journal says where) and parks it;
//! `runbook approve RUN_ID STEP` from any machine records the approval
//! and queues the run to continue; a parked run nobody approves in time
//! escalates.

use super::nats::{EVENT_PREFIX, Fleet};
use super::request::{Request, publish};
use super::store::JetStreamStore;
use anyhow::{Result, anyhow};
use runbook_core::error::hinted;
use runbook_journal::store::Store;
use serde_json::{Value, json};

/// The parked runs: one value, run id to where it waits.
const PARKED: &str = "parked";

/// The steps approved for a run.
fn approvals_key(run_id: &str) -> String {
    format!("approvals.{run_id}")
}

/// The step a run stopped at for an approval, and the change it wanted,
/// from its journal; `None` unless its last end is `awaiting-approval`.
pub fn waiting_step(lines: &[Value]) -> Option<(String, String)> {
    let end = runbook_journal::replay::finished(lines)?;
    if end["status"] != "awaiting-approval" {
        return None;
    }
    let report = lines
        .iter()
        .rev()
        .find(|l| l["event"] == "step-end")
        .map(|l| &l["report"])?;
    Some((
        report["id"].as_str()?.to_string(),
        report["awaiting_approval"].as_str()?.to_string(),
    ))
}

/// Parks `run_id` (stopped at `step` for `change`) until an approval or
/// `timeout_s`, when it is escalated (or, `deny`, its change is denied
/// and the run goes on); tells `runbook.events.parked`. `page`: who is
/// paged about it ([`super::page::planned`]), on record before the page
/// goes out. Returns the parked entry.
pub fn park(
    store: &JetStreamStore,
    run_id: &str,
    incident: &str,
    (step, change, intent): (&str, &str, Option<&str>),
    (timeout_s, deny): (u64, bool),
    page: Option<Value>,
) -> Result<Value> {
    let now = runbook_core::time::now_ms();
    let mut value = json!({
        "run_id": run_id,
        "incident": incident,
        "step": step,
        "change": change,
        "since_ms": now,
        "deadline_ms": now + timeout_s * 1000,
        "page": page,
    });
    if deny {
        value["on_timeout"] = "deny".into();
    }
    // A change under an approval rule: its digest, which Slack's buttons
    // carry.
    if let Some(intent) = intent {
        value["intent"] = intent.into();
    }
    let (id, entry) = (run_id.to_string(), value.clone());
    store.fleet().change("parking a run", PARKED, move |all| {
        if !all.is_object() {
            *all = json!({});
        }
        all[&id] = entry.clone();
        true
    })?;
    event(store.fleet(), "parked", &value);
    tracing::warn!(
        run_id,
        incident,
        step,
        "parked: waiting up to {timeout_s} s for `runbook approve {run_id} {step}` ({change})"
    );
    Ok(value)
}

/// The steps approved for `run_id` so far.
pub fn approvals(fleet: &Fleet, run_id: &str) -> Result<Vec<String>> {
    let (value, _) = fleet.read("reading approvals", &approvals_key(run_id))?;
    Ok(value["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["step"].as_str().map(str::to_string))
        .collect())
}

/// `runbook approve`: records who approved `step` of `run_id` and queues
/// the run to continue. Refused unless the run is parked at that step.
pub fn approve(store: &dyn Store, fleet: &Fleet, run_id: &str, step: &str) -> Result<u64> {
    let lines = store.read_run(run_id)?;
    if lines.is_empty() {
        return Err(hinted(
            format!("no run `{run_id}` in NATS `{}`", fleet.url),
            "`runbook runs --nats URL` lists the runs there",
        ));
    }
    let entry = list(fleet)?[run_id].clone();
    if entry["escalated"].is_object() {
        return Err(hinted(
            format!(
                "run `{run_id}` was escalated and cannot be approved: {}",
                entry["escalated"]["reason"].as_str().unwrap_or_default()
            ),
            "its journal cannot be continued; look into it, then start a new run for the incident",
        ));
    }
    match waiting_step(&lines) {
        Some((waiting, _)) if waiting == step => {}
        Some((waiting, change)) => {
            return Err(hinted(
                format!("run `{run_id}` waits for step `{waiting}` ({change}), not `{step}`"),
                format!("`runbook approve {run_id} {waiting}`"),
            ));
        }
        None => {
            let status = runbook_journal::replay::finished(&lines)
                .map(|e| e["status"].as_str().unwrap_or("?").to_string())
                .unwrap_or_else(|| "unfinished".into());
            return Err(hinted(
                format!("run `{run_id}` is not waiting for an approval (it is {status})"),
                format!("`runbook show {run_id} --nats URL` says where it stands"),
            ));
        }
    }
    queue_resume(fleet, run_id, step, runbook_core::whoami::who(), "")
}

/// Records that `step` of `run_id` was decided on (by `by`) and queues
/// the run to continue: a worker resumes it, and the change goes ahead
/// or not as decided (a step under an approval rule: by the decisions in
/// its journal). `intent`, when given, names the change decided on: the
/// request's deduplication id carries it, so a later parking of the same
/// step decided within NATS's deduplication window is not taken for this one.
pub fn queue_resume(
    fleet: &Fleet,
    run_id: &str,
    step: &str,
    by: String,
    intent: &str,
) -> Result<u64> {
    let approval = json!({ "step": step, "by": by, "at_ms": runbook_core::time::now_ms(), "host": runbook_core::whoami::hostname() });
    fleet.change("recording an approval", &approvals_key(run_id), move |v| {
        if !v["steps"].is_array() {
            *v = json!({ "steps": [] });
        }
        if let Some(steps) = v["steps"].as_array_mut() {
            steps.push(approval.clone());
        }
        true
    })?;
    let request = Request::Resume {
        run_id: run_id.to_string(),
        step: step.to_string(),
        by,
    };
    let id = match intent {
        "" => format!("approve:{run_id}:{step}"),
        intent => format!("approve:{run_id}:{step}:{intent}"),
    };
    let published = publish(fleet, &request, &id)?;
    Ok(published.sequence)
}

/// Who decided the change a run waits for, if its rule's decisions are
/// all in: approvers (or a denier) whose run only waits to be continued.
fn decided(lines: &[Value]) -> Option<String> {
    use runbook_core::approval::Tally;
    let pending = runbook_journal::approvals::pending(lines)?;
    let rule = runbook_journal::approvals::rules(lines).remove(&pending.step)?;
    match runbook_journal::approvals::standing(lines, &rule, &pending) {
        Tally::Approved(by) => Some(by.join(", ")),
        Tally::Denied(by) => Some(by),
        Tally::Waiting { .. } => None,
    }
}

/// A parked change whose rule denies it on timeout: the denial is
/// journaled (a decision by `timeout`, once) and the run queued to go
/// on without the change.
fn deny_on_timeout(
    journal: &runbook_journal::log::Journal,
    lines: &[Value],
    fleet: &Fleet,
    run_id: &str,
) -> Result<()> {
    use runbook_core::approval::{Choice, TIMEOUT, Vote};
    let pending = runbook_journal::approvals::pending(lines)
        .ok_or_else(|| anyhow!("run `{run_id}` is no longer waiting"))?;
    let votes = runbook_journal::approvals::votes(lines);
    if !votes
        .iter()
        .any(|v| v.by == TIMEOUT && v.intent == pending.intent)
    {
        let vote = Vote {
            step: pending.step.clone(),
            intent: pending.intent.clone(),
            decision: Choice::Deny,
            by: TIMEOUT.into(),
            groups: Vec::new(),
            logins: Vec::new(),
            how: TIMEOUT.into(),
            from: runbook_core::whoami::hostname(),
            at_ms: runbook_core::time::now_ms(),
        };
        journal.record("approval", json!({ "step": pending.step, "vote": vote }))?;
    }
    tracing::warn!(
        run_id,
        step = pending.step,
        "nobody approved the change in time; its rule denies it: the run goes on without it"
    );
    queue_resume(
        fleet,
        run_id,
        &pending.step,
        TIMEOUT.into(),
        &pending.intent,
    )?;
    Ok(())
}

/// How long a process's claim on an overdue parked run keeps others
/// from escalating it: past it (the process died, or NATS went away) the
/// next sweep anywhere claims it again.
const CLAIM_FOR_MS: u64 = 10_000;

/// Parked runs whose time is up, claimed by this process (each by one
/// process at a time), and escalated: `run-end` `escalated` in the
/// journal, `runbook.events.escalated`. A run leaves the parked list only
/// once its journal says it went on or escalated: a process that dies or
/// fails half-way leaves it parked, and its claim lapses. Returns the
/// parked entries of the runs escalated, to be paged; with them, runs
/// escalated without their journal ([`unjournaled`]) whose page is not
/// yet on record ([`mark_paged`]), to be paged again.
pub fn escalate_overdue(store: &JetStreamStore) -> Result<Vec<Value>> {
    let now = runbook_core::time::now_ms();
    let (parked, _) = store.fleet().read("reading parked runs", PARKED)?;
    let overdue: Vec<(String, Value)> = parked
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| {
            v["deadline_ms"].as_u64().is_some_and(|d| d <= now)
                && !claimed(v, now)
                && (v["escalated"].is_null() || unpaged(v))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let me = format!(
        "{}:{}",
        runbook_core::whoami::hostname(),
        std::process::id()
    );
    let mut done = Vec::new();
    // At most a few each sweep: the next sweep takes the rest.
    for (run_id, value) in overdue.into_iter().take(20) {
        // Claim it: the one process whose write marks it escalates; it
        // stays in the list until its journal says how it ended.
        let (id, by, seen) = (run_id.clone(), me.clone(), value.clone());
        let claimed_now = store
            .fleet()
            .change("claiming a parked run", PARKED, move |all| {
                let now = runbook_core::time::now_ms();
                match all.get_mut(&id) {
                    // The very parking seen overdue (approved, continued
                    // and parked again at a later step since: not this),
                    // as it was seen (escalated since: not again).
                    Some(entry)
                        if same(entry, &seen)
                            && entry["escalated"] == seen["escalated"]
                            && !claimed(entry, now) =>
                    {
                        entry["claim"] = json!({ "by": by, "until_ms": now + CLAIM_FOR_MS });
                        true
                    }
                    _ => false,
                }
            })?;
        if !claimed_now {
            continue;
        }
        // Escalated without its journal by a process that died before its
        // page was on record: paged again (the same key: one incident).
        if unpaged(&value) {
            done.push(value);
            continue;
        }
        // Anything that stops this (being continued right now, NATS away)
        // leaves it parked: the claim lapses and a later sweep tries again.
        let later = |why: &anyhow::Error| tracing::warn!(run_id, "escalating later: {why:#}");
        if let Some(why) = runbook_journal::failpoint("parked-claimed") {
            later(&anyhow!("failpoint `parked-claimed` ({why})"));
            continue;
        }
        let journal = match store.reopen_run(&run_id) {
            Ok(j) => j,
            // Altered: it can neither go on nor record its end.
            Err(e) if runbook_journal::chain::Untrusted::in_chain(&e) => {
                match unjournaled(store.fleet(), &run_id, &value, &me, &e) {
                    Some(entry) => {
                        let mut told = entry.clone();
                        told["reason"] = entry["escalated"]["reason"].clone();
                        tracing::error!(run_id, "{}", told["reason"]);
                        event(store.fleet(), "escalated", &told);
                        done.push(entry);
                    }
                    None => later(&e),
                }
                continue;
            }
            // Being continued right now, NATS away: it may yet go on.
            Err(e) => {
                later(&e);
                continue;
            }
        };
        let lines = match store.read_run(&run_id) {
            Ok(l) => l,
            Err(e) => {
                drop(journal);
                later(&e);
                continue;
            }
        };
        // Approved and continued (or parked again at another step), or
        // escalated by a process that died before it took it off the
        // list: nothing to escalate.
        if waiting_step(&lines).is_none_or(|(step, _)| value["step"] != step.as_str()) {
            drop(journal);
            forget(store.fleet(), &run_id, &value);
            continue;
        }
        // Decided in time (the run waits for a worker to continue it):
        // queued again, never escalated or denied over it.
        if let Some(by) = decided(&lines) {
            drop(journal);
            if let Err(e) = queue_resume(
                store.fleet(),
                &run_id,
                value["step"].as_str().unwrap_or_default(),
                by,
                &runbook_journal::approvals::pending(&lines)
                    .map(|p| p.intent)
                    .unwrap_or_default(),
            ) {
                later(&e);
            }
            continue;
        }
        if value["on_timeout"] == "deny" {
            let denied = deny_on_timeout(&journal, &lines, store.fleet(), &run_id);
            drop(journal);
            if let Err(e) = denied {
                later(&e);
            }
            // Off the list once its journal says it went on.
            continue;
        }
        let waited = runbook_core::time::now_ms()
            .saturating_sub(value["since_ms"].as_u64().unwrap_or(0))
            / 1000;
        let reason = format!(
            "nobody approved step `{}` ({}) within {waited} s: escalated",
            value["step"].as_str().unwrap_or_default(),
            value["change"].as_str().unwrap_or_default()
        );
        let end = json!({ "status": "escalated", "reason": reason });
        if let Err(e) = journal.record("run-end", end) {
            drop(journal);
            later(&anyhow!("escalating run `{run_id}`: {e:#}"));
            continue;
        }
        drop(journal);
        // Off the list; should that fail, the next sweep finds it ended.
        forget(store.fleet(), &run_id, &value);
        let mut told = value.clone();
        told["reason"] = reason.clone().into();
        event(store.fleet(), "escalated", &told);
        tracing::error!(run_id, "{reason}");
        done.push(value);
    }
    Ok(done)
}

/// Sweeps that find an overdue run's journal altered before it is
/// escalated without it (a journal whose chain is broken stays broken:
/// more than one only so that no single odd read decides).
const OPEN_TRIES: u64 = 3;

/// Whether `entry` was escalated without its journal, has a page, and
/// that page is not on record yet.
fn unpaged(entry: &Value) -> bool {
    entry["escalated"]["journaled"] == false
        && !entry["page"].is_null()
        && entry["escalated"]["paged"].is_null()
}

/// Counts, on the entry of `run_id`'s overdue parking `seen` (claimed by
/// `me`), that its journal failed its chain check, and lets go of the
/// claim so the next sweep looks again at once. Such a run can neither go
/// on nor record its escalation: at the `OPEN_TRIES`th time it is
/// escalated all the same, on the parked list (`escalated`: when, why,
/// `journaled: false`), where its entry stays, `runbook approve` refuses
/// it, and later sweeps pass it by once its page is on record
/// ([`mark_paged`]). Returns the entry when this call escalated it (the
/// claim is then kept while it is paged).
fn unjournaled(
    fleet: &Fleet,
    run_id: &str,
    seen: &Value,
    me: &str,
    why: &anyhow::Error,
) -> Option<Value> {
    let (id, seen, me, why) = (
        run_id.to_string(),
        seen.clone(),
        me.to_string(),
        format!("{why:#}"),
    );
    let escalated = std::sync::Arc::new(std::sync::Mutex::new(None));
    let out = escalated.clone();
    let counted = fleet.change(
        "counting a parked run's altered journal",
        PARKED,
        move |all| {
            // Called again when another write came first: decided afresh.
            *out.lock().unwrap_or_else(|e| e.into_inner()) = None;
            // Still this parking, not escalated, and still this process's
            // claim (one that lapsed may be another's now).
            let Some(entry) = all.get_mut(&id).filter(|e| {
                same(e, &seen) && e["escalated"].is_null() && e["claim"]["by"] == me.as_str()
            }) else {
                return false;
            };
            let failures = entry["open_failures"].as_u64().unwrap_or(0) + 1;
            entry["open_failures"] = failures.into();
            entry["open_error"] = why.clone().into();
            if failures < OPEN_TRIES {
                if let Some(m) = entry.as_object_mut() {
                    m.remove("claim");
                }
                return true;
            }
            let reason = format!(
                "nobody approved step `{}` ({}) in time, and its journal cannot be continued \
             ({why}): escalated on the parked list, not in the journal",
                entry["step"].as_str().unwrap_or_default(),
                entry["change"].as_str().unwrap_or_default(),
            );
            entry["escalated"] = json!({
                "at_ms": runbook_core::time::now_ms(),
                "reason": reason,
                "journaled": false,
            });
            *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(entry.clone());
            true
        },
    );
    if let Err(e) = counted {
        tracing::warn!(run_id, "{e:#}");
        return None;
    }
    escalated.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Records on the entry of a run escalated without its journal that its
/// page went out (`delivered` or not: the entry is where that is kept,
/// its journal taking no more lines), and lets go of the claim. Until
/// then every sweep that finds it unclaimed pages it again (the same
/// key: one incident).
pub fn mark_paged(fleet: &Fleet, run_id: &str, seen: &Value, delivered: bool) {
    let (id, seen) = (run_id.to_string(), seen.clone());
    let marked = fleet.change("recording an escalation's page", PARKED, move |all| {
        let Some(entry) = all
            .get_mut(&id)
            .filter(|e| same(e, &seen) && e["escalated"]["journaled"] == false)
        else {
            return false;
        };
        entry["escalated"]["paged"] =
            json!({ "delivered": delivered, "at_ms": runbook_core::time::now_ms() });
        if let Some(m) = entry.as_object_mut() {
            m.remove("claim");
        }
        true
    });
    if let Err(e) = marked {
        tracing::warn!(run_id, "{e:#} (the next sweep pages it again)");
    }
}

/// Whether another sweep holds a claim on this parked entry now.
fn claimed(entry: &Value, now: u64) -> bool {
    entry["claim"]["until_ms"].as_u64().is_some_and(|u| u > now)
}

/// The parked runs now: run id to its entry (step, change, deadline,
/// page, a sweep's claim).
pub fn list(fleet: &Fleet) -> Result<Value> {
    let (value, _) = fleet.read("reading parked runs", PARKED)?;
    Ok(if value.is_object() { value } else { json!({}) })
}

/// Whether a parked entry is the parking `seen` was (not a later one of
/// the same run).
fn same(entry: &Value, seen: &Value) -> bool {
    entry["since_ms"] == seen["since_ms"] && entry["step"] == seen["step"]
}

/// Takes `run_id`'s parking `seen` off the parked list (its journal says
/// it went on or ended); a later parking of the run stays.
fn forget(fleet: &Fleet, run_id: &str, seen: &Value) {
    let (id, seen) = (run_id.to_string(), seen.clone());
    let taken = move |all: &mut Value| {
        let Some(m) = all.as_object_mut() else {
            return false;
        };
        if m.get(&id).is_some_and(|entry| same(entry, &seen)) {
            m.remove(&id);
            return true;
        }
        false
    };
    if let Err(e) = fleet.change("taking an ended run off the parked list", PARKED, taken) {
        tracing::warn!(run_id, "{e:#} (the next sweep takes it off)");
    }
}

/// Forgets that `run_id` is parked (it continued); returns its parked
/// entry, if this call took it out.
pub fn unpark(fleet: &Fleet, run_id: &str) -> Option<Value> {
    let id = run_id.to_string();
    let removed = std::sync::Arc::new(std::sync::Mutex::new(None));
    let out = removed.clone();
    let changed = fleet.change("unparking a run", PARKED, move |all| {
        let taken = all.as_object_mut().and_then(|m| m.remove(&id));
        let found = taken.is_some();
        *out.lock().unwrap_or_else(|e| e.into_inner()) = taken;
        found
    });
    match changed {
        Ok(true) => removed.lock().unwrap_or_else(|e| e.into_inner()).take(),
        _ => None,
    }
}

/// Publishes `value` on `runbook.events.KIND` (best effort: people are
/// also told by the log).
pub fn event(fleet: &Fleet, kind: &str, value: &Value) {
    let (client, subject, bytes) = (
        fleet.client.clone(),
        format!("{EVENT_PREFIX}{kind}"),
        bytes::Bytes::from(value.to_string()),
    );
    let _ = fleet.wait("publishing an event", async move {
        client
            .publish(subject, bytes)
            .await
            .map_err(|e| anyhow!("{e}"))
    });
}
