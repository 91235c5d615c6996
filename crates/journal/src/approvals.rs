//! A parked run's approvals, read back from its journal: the change it
//! waits for (its last `awaiting` line, named by its digest), the rule
//! each step's changes are under (recorded in `run-start`), who started
//! the run, and the decisions (`approval` lines) recorded since.

use runbook_core::approval::{Rule, Tally, Vote, intent_digest, tally};
use serde_json::Value;
use std::collections::BTreeMap;

/// The change a run stopped at for an approval.
#[derive(Debug, Clone)]
pub struct Pending {
    pub step: String,
    /// [`intent_digest`] of its `awaiting` line.
    pub intent: String,
    /// What it will do, for people.
    pub change: String,
    pub resource: String,
    /// When it first stopped for this very change (the first `awaiting`
    /// line with its digest), unix ms: parking again for it (a resume
    /// without enough approvals) does not start its time over.
    pub since_ms: u64,
}

/// A journal line's time, unix ms (0 when it has none).
pub fn line_ms(l: &Value) -> u64 {
    l["time"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// The change the run waits for, if its last end is `awaiting-approval`.
pub fn pending(lines: &[Value]) -> Option<Pending> {
    let end = crate::replay::finished(lines)?;
    if end["status"] != "awaiting-approval" {
        return None;
    }
    let (_, mut p) = last_awaiting(lines)?;
    p.since_ms = lines
        .iter()
        .filter(|l| l["event"] == "awaiting")
        .map(as_pending)
        .filter(|q| q.intent == p.intent)
        .map(|q| q.since_ms)
        .min()
        .unwrap_or(p.since_ms);
    Some(p)
}

fn last_awaiting(lines: &[Value]) -> Option<(usize, Pending)> {
    lines
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| l["event"] == "awaiting")
        .map(|(i, l)| (i, as_pending(l)))
}

fn as_pending(l: &Value) -> Pending {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Pending {
        step: s(&l["step"]),
        intent: intent_digest(l),
        change: s(&l["change"]),
        resource: s(&l["resource"]),
        since_ms: line_ms(l),
    }
}

/// Each step's approval rule, as the run started with it, together with
/// the rule the organisation's policies asked for (its `policy` lines).
pub fn rules(lines: &[Value]) -> BTreeMap<String, Rule> {
    let start = lines.iter().find(|l| l["event"] == "run-start");
    let own = start
        .and_then(|s| s["approval_rules"].as_object())
        .into_iter()
        .flatten()
        .filter_map(|(step, rule)| Some((step.clone(), serde_json::from_value(rule.clone()).ok()?)))
        .collect();
    with_policies(own, lines)
}

/// `rules` with, for each step, the rule the policies asked for the
/// change it last waited for ([`Rule::and_policy`]): the `policy` line of
/// that very call (interface, operation, resource, index) just before its
/// `awaiting` line. A change that waited for the step's own rule alone
/// adds nothing.
pub fn with_policies(mut rules: BTreeMap<String, Rule>, lines: &[Value]) -> BTreeMap<String, Rule> {
    let mut asked: BTreeMap<String, Rule> = BTreeMap::new();
    let mut last_policy: Option<&Value> = None;
    let same_call = |a: &Value, b: &Value| {
        ["step", "interface", "operation", "resource", "index"]
            .iter()
            .all(|k| a[k] == b[k])
    };
    for l in lines {
        if l["event"] == "policy" {
            last_policy = Some(l);
        } else if l["event"] == "awaiting" {
            let Some(step) = l["step"].as_str() else {
                continue;
            };
            let rule = last_policy
                .filter(|p| same_call(p, l) && p["decision"] == "needs-approvals")
                .and_then(|p| serde_json::from_value::<Rule>(p["rule"].clone()).ok());
            match rule {
                Some(rule) => asked.insert(step.to_string(), rule),
                None => asked.remove(step),
            };
        }
    }
    for (step, policy) in asked {
        let merged = match rules.get(&step) {
            Some(own) => own.and_policy(&policy),
            None => policy,
        };
        rules.insert(step, merged);
    }
    rules
}

/// Who started the run: `run-start`'s `starter` (the person who asked
/// for it: the CLI's user, a fleet request's submitter), else its holder.
pub fn starter(lines: &[Value]) -> Option<String> {
    let start = lines.iter().find(|l| l["event"] == "run-start")?;
    start["starter"]
        .as_str()
        .or_else(|| start["holder"]["who"].as_str())
        .map(str::to_string)
}

/// Every decision recorded in the journal, in order.
pub fn votes(lines: &[Value]) -> Vec<Vote> {
    lines
        .iter()
        .filter(|l| l["event"] == "approval")
        .filter_map(|l| serde_json::from_value(l["vote"].clone()).ok())
        .collect()
}

/// Where `pending` stands under `rule` with the journal's decisions.
pub fn standing(lines: &[Value], rule: &Rule, pending: &Pending) -> Tally {
    let votes: Vec<Vote> = votes(lines)
        .into_iter()
        .filter(|v| v.step == pending.step)
        .collect();
    tally(rule, starter(lines).as_deref(), &pending.intent, &votes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn awaiting(to: &str, time: &str) -> Value {
        json!({ "event": "awaiting", "step": "s", "interface": "ecs", "operation": "rollback",
                "resource": "r", "index": 0, "change": "roll back", "would": { "to": to }, "time": time })
    }

    fn parked() -> Value {
        json!({ "event": "run-end", "status": "awaiting-approval" })
    }

    #[test]
    fn parking_again_for_the_same_change_does_not_start_its_time_over() {
        let resume = json!({ "event": "resume" });
        let lines = [
            awaiting("x:2", "2026-12-04T10:00:00.000Z"),
            parked(),
            resume.clone(),
            awaiting("x:2", "2026-12-04T10:20:00.000Z"),
            parked(),
        ];
        let p = pending(&lines).unwrap();
        assert_eq!(p.since_ms, line_ms(&lines[0]));
        // Another change (the world moved): its own time.
        let lines = [
            awaiting("x:2", "2026-12-04T10:00:00.000Z"),
            parked(),
            resume,
            awaiting("x:1", "2026-12-04T10:20:00.000Z"),
            parked(),
        ];
        assert_eq!(pending(&lines).unwrap().since_ms, line_ms(&lines[3]));
        // Not parked: nothing pending.
        assert!(pending(&lines[..4]).is_none());
    }

    fn policy(step: &str, resource: &str, index: u64, decision: &str, approvals: u32) -> Value {
        json!({ "event": "policy", "step": step, "interface": "feature-flags", "operation": "set",
                "resource": resource, "index": index, "decision": decision,
                "rule": { "approvals": approvals } })
    }

    fn waits(step: &str, resource: &str, index: u64) -> Value {
        json!({ "event": "awaiting", "step": step, "interface": "feature-flags", "operation": "set",
                "resource": resource, "index": index, "change": "set", "would": {} })
    }

    #[test]
    fn a_policy_rule_is_the_one_of_the_change_the_step_waits_for() {
        let start = json!({ "event": "run-start", "approval_rules": { "s": { "approvals": 1, "from": ["dba"] } } });
        // The step's first change was held by a policy (3 approvals),
        // approved and made; its second waits for its own rule alone.
        let lines = [
            start.clone(),
            policy("s", "AUTH_A", 0, "needs-approvals", 3),
            waits("s", "AUTH_A", 0),
            policy("s", "AUTH_A", 0, "allow", 3),
            policy("s", "B", 0, "allow", 1),
            waits("s", "B", 0),
        ];
        assert_eq!(rules(&lines)["s"].approvals, 1);
        // While the first waited: its policy's count, the step's own people.
        let r = &rules(&lines[..3])["s"];
        assert_eq!(r.approvals, 3);
        assert_eq!(
            r.from.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            ["dba"]
        );
        // A policy line of another call is not this change's.
        let lines = [
            start,
            policy("s", "AUTH_A", 0, "needs-approvals", 3),
            waits("s", "AUTH_A", 1),
        ];
        assert_eq!(rules(&lines)["s"].approvals, 1);
    }
}
