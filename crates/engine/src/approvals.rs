//! Approvals under a step's rule (M of N people, not the run's starter,
//! a timeout), from both sides: the [`Gate`]s a run's approver is given,
//! from the runbook's rules and the journal's decisions; and one
//! person's decision recorded in a parked run's journal ([`cast`]: `runbook
//! approve`, and any other front door that knows who someone is).

use anyhow::{Context, Result};
use runbook_capabilities::approval::Gate;
use runbook_core::approval::{Choice, OnTimeout, Rule, TIMEOUT, Tally, Vote};
use runbook_core::approvers::Person;
use runbook_core::error::hinted;
use runbook_journal::approvals::{Pending, pending, rules, standing, starter, votes};
use runbook_journal::holder::Held;
use runbook_journal::store::Store;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Each ruled step's gate: where the change it last waited for stands
/// (nothing yet on a fresh run). A change whose rule denies it on
/// timeout is denied once the time is up and it is not approved.
pub fn gates(
    rules_of: &BTreeMap<String, Rule>,
    lines: &[Value],
    now_ms: u64,
) -> BTreeMap<String, Gate> {
    // Only the change the run stopped for can have been decided on.
    let waited = pending(lines);
    rules_of
        .iter()
        .map(|(step, rule)| {
            let gate = match waited.as_ref().filter(|p| p.step == *step) {
                Some(p) => {
                    let tally = decided_by_time(rule, p, standing(lines, rule, p), now_ms);
                    let voters = match &tally {
                        Tally::Approved(by) => voters(lines, p, by),
                        _ => Vec::new(),
                    };
                    Gate::new(rule.clone(), tally, Some(p.intent.clone())).with_voters(voters)
                }
                None => Gate::new(
                    rule.clone(),
                    Tally::Waiting {
                        have: Vec::new(),
                        need: rule.approvals,
                    },
                    None,
                ),
            };
            (step.clone(), gate)
        })
        .collect()
}

/// The people who approved `p`, with the groups their decisions
/// recorded; never the run's starter (whose own rule may let them
/// approve): the policies count other people.
fn voters(lines: &[Value], p: &Pending, by: &[String]) -> Vec<runbook_policy::Approval> {
    let votes = votes(lines);
    let starter = starter(lines);
    let is_starter = |person: &str| {
        starter.as_deref().is_some_and(|s| {
            person == s
                || votes
                    .iter()
                    .any(|v| v.by == person && v.logins.iter().any(|l| l == s))
        })
    };
    by.iter()
        .filter(|person| !is_starter(person))
        .map(|person| runbook_policy::Approval {
            person: person.clone(),
            groups: votes
                .iter()
                .find(|v| v.intent == p.intent && &v.by == person)
                .map(|v| v.groups.clone())
                .unwrap_or_default(),
        })
        .collect()
}

/// `tally`, unless the change waited past its rule's timeout unapproved
/// and the rule denies it then.
fn decided_by_time(rule: &Rule, p: &Pending, tally: Tally, now_ms: u64) -> Tally {
    match (&tally, closes_at(rule, p)) {
        (Tally::Waiting { .. }, Some(at)) if now_ms >= at && rule.on_timeout == OnTimeout::Deny => {
            Tally::Denied(TIMEOUT.to_string())
        }
        _ => tally,
    }
}

/// When a pending change's approval window closes, if its rule has one.
pub fn closes_at(rule: &Rule, p: &Pending) -> Option<u64> {
    rule.timeout()
        .map(|t| p.since_ms.saturating_add(t.as_millis() as u64))
}

/// The runbook's rules, for `run-start`.
pub fn rules_of(runbook: &runbook_core::runbook::Runbook) -> BTreeMap<String, Rule> {
    runbook
        .steps
        .iter()
        .filter_map(|s| Some((s.id.to_string(), s.approval.clone()?)))
        .collect()
}

/// One person's decision on a parked change.
#[derive(Debug, Clone)]
pub struct Ballot {
    pub run_id: String,
    pub step: String,
    pub choice: Choice,
    /// The change they decided on (its digest), when they were shown it:
    /// a decision for any other change is refused.
    pub intent: Option<String>,
    /// How they were known: `token`, `header`, `slack`.
    pub how: String,
    /// Where from: a host name or an address.
    pub from: String,
}

/// A decision recorded, and where the change stands with it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub pending: Pending,
    pub rule: Rule,
    pub vote: Vote,
    pub tally: Tally,
}

/// How long [`cast`] waits for a run another process holds (a decision
/// recorded at the same instant, a worker looking at it).
const HELD_FOR: Duration = Duration::from_secs(10);

/// Records `person`'s decision in the parked run's journal, under the
/// run's hold (so two decisions at the same instant are judged one after
/// the other), after checking it against the change the run waits for
/// and its rule. Refused, with nothing recorded, when the run is not
/// waiting at that step, the decision names another change, the window
/// closed, the rule does not let them decide, they decided already, or
/// the change is decided.
pub fn cast(store: &dyn Store, person: &Person, ballot: &Ballot) -> Result<Recorded> {
    let lines = store.read_run(&ballot.run_id).map_err(|e| {
        runbook_core::error::with_hint(
            e.context(format!("run `{}` could not be read", ballot.run_id)),
            "`runbook runs` lists the runs (with `--nats URL` or `--state-dir DIR` where it ran)",
        )
    })?;
    if lines.is_empty() {
        return Err(hinted(
            format!("no run `{}`", ballot.run_id),
            "`runbook runs` lists the runs (with `--nats URL` or `--state-dir DIR` where it ran)",
        ));
    }
    let now = runbook_core::time::now_ms();
    // Judged before the hold is taken (a clear answer at once), and again
    // under it: another decision may have landed in between.
    let (pending_now, _) = judge(&lines, person, ballot, now)?;
    // The organisation's policies, those the run started under: may this
    // person decide on this change?
    may_decide(&lines, person, ballot, &pending_now.change)?;
    let journal = hold(store, &ballot.run_id)?;
    let lines = store.read_run(&ballot.run_id)?;
    let now = runbook_core::time::now_ms();
    let (pending, rule) = judge(&lines, person, ballot, now)?;
    let vote = Vote {
        step: ballot.step.clone(),
        intent: pending.intent.clone(),
        decision: ballot.choice,
        by: person.name.clone(),
        groups: person.groups.clone(),
        logins: person.logins.clone(),
        how: ballot.how.clone(),
        from: ballot.from.clone(),
        at_ms: now,
    };
    let seq = journal
        .record(
            "approval",
            serde_json::json!({ "step": ballot.step, "vote": vote }),
        )
        .context("the decision was not recorded")?;
    let mut lines = lines;
    lines.push(serde_json::json!({ "event": "approval", "seq": seq, "vote": vote }));
    let tally = standing(&lines, &rule, &pending);
    Ok(Recorded {
        pending,
        rule,
        vote,
        tally,
    })
}

/// Whether the run's policies (the directory its `run-start` names,
/// under its trust file) let `person` decide on `change`; no policies:
/// yes.
fn may_decide(lines: &[Value], person: &Person, ballot: &Ballot, change: &str) -> Result<()> {
    let Some(start) = lines.iter().find(|l| l["event"] == "run-start") else {
        return Ok(());
    };
    let Some(dir) = start["sources"]["policies"]["dir"].as_str() else {
        return Ok(());
    };
    let trust = match start["sources"]["trust"].as_str() {
        Some(t) => Some(runbook_core::signing::Trust::load(std::path::Path::new(t))?),
        None => None,
    };
    let policies = crate::sources::load_policies(std::path::Path::new(dir), trust.as_ref())
        .context("the run started under this policy directory")?;
    let (runbook, run) = crate::guard::journaled_facts(start, &ballot.run_id);
    crate::guard::may(
        &policies,
        (&person.name, &person.groups),
        runbook_policy::Act::Approve,
        (&runbook, &run),
        (&ballot.step, change),
    )
}

/// The run, reopened to append to it: waits (bounded) while another
/// process holds it.
fn hold(store: &dyn Store, run_id: &str) -> Result<runbook_journal::log::Journal> {
    let until = std::time::Instant::now() + HELD_FOR;
    loop {
        match store.reopen_run(run_id) {
            Ok(j) => return Ok(j),
            Err(e) if e.downcast_ref::<Held>().is_some() && std::time::Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(e.context(format!(
                    "the decision on run `{run_id}` was not recorded: the run is busy"
                )));
            }
        }
    }
}

/// The change `ballot` is about and its rule, or why the decision is
/// refused.
pub fn judge(
    lines: &[Value],
    person: &Person,
    ballot: &Ballot,
    now_ms: u64,
) -> Result<(Pending, Rule)> {
    let run = &ballot.run_id;
    let Some(p) = pending(lines) else {
        let status = runbook_journal::replay::finished(lines)
            .map(|e| e["status"].as_str().unwrap_or("?").to_string())
            .unwrap_or_else(|| "running or stopped".into());
        return Err(hinted(
            format!(
                "run `{run}` is not waiting for an approval (it is {status}): nothing was recorded"
            ),
            format!("`runbook show {run}` says where it stands"),
        ));
    };
    if p.step != ballot.step {
        return Err(hinted(
            format!(
                "run `{run}` waits for step `{}` ({}), not `{}`: nothing was recorded",
                p.step, p.change, ballot.step
            ),
            format!("`runbook approve {run} {}`", p.step),
        ));
    }
    if let Some(intent) = &ballot.intent
        && *intent != p.intent
    {
        return Err(hinted(
            format!(
                "this decision is for change `{intent}`, but run `{run}` now waits for `{}` ({}): nothing was recorded",
                p.intent, p.change
            ),
            "the run moved on since you looked; look at the change it waits for now and decide on that",
        ));
    }
    let Some(rule) = rules(lines).get(&p.step).cloned() else {
        return Err(hinted(
            format!(
                "step `{}` of run `{run}` has no approval rule, so decisions are not counted for it: nothing was recorded",
                p.step
            ),
            format!(
                "approve it with `runbook resume {run} --approve {}` (or `runbook approve {run} {} --nats URL` on a fleet); give the step an `approval:` rule for M-of-N approvals",
                p.step, p.step
            ),
        ));
    };
    if let Some(at) = closes_at(&rule, &p)
        && now_ms >= at
    {
        return Err(hinted(
            format!(
                "the time to decide on step `{}` of run `{run}` ran out at {} (its rule: {}): nothing was recorded",
                p.step,
                runbook_core::time::rfc3339(at),
                rule.describe()
            ),
            "start a new run of the incident if the change is still needed",
        ));
    }
    let who = &person.name;
    rule.may_decide(
        who,
        &person.groups,
        &person.logins,
        starter(lines).as_deref(),
    )
    .map_err(|why| {
        hinted(
            format!("{why}: nothing was recorded"),
            format!("this step's rule: {}", rule.describe()),
        )
    })?;
    let mine: Vec<Vote> = votes(lines)
        .into_iter()
        .filter(|v| v.intent == p.intent && v.step == p.step)
        .collect();
    if let Some(v) = mine.iter().find(|v| v.by == *who) {
        return Err(hinted(
            format!(
                "`{who}` already {} this change at {}: nothing was recorded",
                match v.decision {
                    Choice::Approve => "approved",
                    Choice::Deny => "denied",
                },
                runbook_core::time::rfc3339(v.at_ms)
            ),
            format!("it needs other people: {}", rule.describe()),
        ));
    }
    match standing(lines, &rule, &p) {
        Tally::Waiting { .. } => Ok((p, rule)),
        Tally::Approved(by) => Err(hinted(
            format!(
                "the change was already approved by {}: nothing was recorded",
                by.join(", ")
            ),
            format!("the run goes on: `runbook show {run}`"),
        )),
        Tally::Denied(by) => Err(hinted(
            format!("the change was already denied by `{by}`: nothing was recorded"),
            format!("`runbook show {run}`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbook_capabilities::approval::Approver;
    use runbook_core::approval::Policy;
    use serde_json::json;

    #[test]
    fn the_policies_are_never_told_the_starter_approved() {
        let awaiting = json!({ "event": "awaiting", "step": "s", "interface": "ecs", "operation": "rollback",
                               "resource": "r", "index": 0, "change": "roll back", "would": {},
                               "time": "2026-12-04T10:00:00.000Z" });
        let intent = runbook_core::approval::intent_digest(&awaiting);
        let vote = |by: &str, groups: &[&str], logins: &[&str]| {
            json!({ "event": "approval", "vote": {
                "step": "s", "intent": intent, "decision": "approve", "by": by,
                "groups": groups, "logins": logins, "how": "token", "from": "h", "at_ms": 1 } })
        };
        let lines = [
            json!({ "event": "run-start", "starter": "dsmith" }),
            awaiting,
            json!({ "event": "run-end", "status": "awaiting-approval" }),
            vote("dave", &["incident-commander"], &["dsmith"]),
            vote("alice", &["sre"], &[]),
        ];
        // The step's own rule lets the starter approve.
        let rule: Rule =
            serde_json::from_value(json!({ "approvals": 2, "starter_may_approve": true })).unwrap();
        let gates = gates(&[("s".to_string(), rule)].into(), &lines, 0);
        let approver = Approver::new(Policy::All, false, false).with_gates(gates);
        let told = approver.approved("s", &intent);
        assert_eq!(
            told,
            vec![runbook_policy::Approval {
                person: "alice".into(),
                groups: vec!["sre".into()]
            }]
        );
    }
}
