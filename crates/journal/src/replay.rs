//! What a run's journal says, read back: whether it finished, what
//! resuming it replays (ended steps, changes made or perhaps made), and
//! the changes an incident's runs applied (so a rerun never mistakes its
//! own fix for the cause).

use crate::store::Store;
use serde_json::Value;
use std::collections::BTreeMap;

/// The `run-end` record, if the run finished (and was not resumed after
/// it stopped for an approval).
pub fn finished(lines: &[Value]) -> Option<&Value> {
    lines
        .iter()
        .rev()
        .find(|l| l["event"] == "run-end" || l["event"] == "resume")
        .filter(|l| l["event"] == "run-end")
}

/// The incident a run belongs to by default: the runbook, where it runs,
/// and when the incident started when that is known.
pub fn default_incident(runbook_id: &str, backend: &str, incident_start: Option<&str>) -> String {
    match incident_start {
        Some(t) => format!("{runbook_id}@{backend}@{t}"),
        None => format!("{runbook_id}@{backend}"),
    }
}

/// A mutation as the journal has it, for resuming a run.
#[derive(Debug, Clone)]
pub enum Done {
    /// Applied: what the step was told.
    Applied(Value),
    /// An intent with no result: it may or may not have reached the
    /// backend; `would` is what the step would be told if it did.
    Unknown { would: Value },
}

/// Identifies one mutation of one step: the same call in the same order.
pub type CallKey = (String, String, String, String, usize);

/// What resuming a run needs from its journal.
#[derive(Debug, Default)]
pub struct Replay {
    /// Reports of the steps that ended, in order.
    pub ended: Vec<Value>,
    /// The changes already made or attempted: step, interface, operation,
    /// resource, and which such call in the step it was (0, 1, ...).
    pub mutations: BTreeMap<CallKey, Done>,
    /// Changes applied in this run, counted against `max_mutations`.
    pub applied: usize,
    /// Changes the run stopped before for want of an approval, by step,
    /// interface, operation, resource and which such call in the step it
    /// was: what the change was and what
    /// it would do, as previewed then. An approval given later is for
    /// that picture of the world; the change goes ahead only if a fresh
    /// preview still shows it.
    pub awaited: BTreeMap<CallKey, Awaited>,
}

/// A change that waited for an approval, as previewed when it was asked.
#[derive(Debug, Clone)]
pub struct Awaited {
    pub change: String,
    pub would: Value,
}

impl Replay {
    pub fn from_journal(lines: &[Value]) -> Self {
        let mut replay = Replay::default();
        let mut seen: BTreeMap<(String, String, String, String), usize> = BTreeMap::new();
        let mut intents: BTreeMap<u64, CallKey> = BTreeMap::new();
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        for l in lines {
            match l["event"].as_str() {
                Some("step-start") => seen.retain(|k, _| k.0 != s(&l["step"])),
                Some("intent") => {
                    let base = (
                        s(&l["step"]),
                        s(&l["interface"]),
                        s(&l["operation"]),
                        s(&l["resource"]),
                    );
                    // The call's index as the step counted it (every call
                    // to the operation, replayed or refused ones too);
                    // journals from before it was recorded: their intents
                    // counted.
                    let n = seen.entry(base.clone()).or_insert(0);
                    let index = l["index"].as_u64().map_or(*n, |i| i as usize);
                    *n += 1;
                    let key = (base.0, base.1, base.2, base.3, index);
                    if let Some(seq) = l["seq"].as_u64() {
                        intents.insert(seq, key.clone());
                    }
                    replay.mutations.insert(
                        key,
                        Done::Unknown {
                            would: l["would"].clone(),
                        },
                    );
                }
                Some("applied") => {
                    if let Some(key) = l["intent"].as_u64().and_then(|i| intents.get(&i)) {
                        replay
                            .mutations
                            .insert(key.clone(), Done::Applied(l["result"].clone()));
                        replay.applied += 1;
                    }
                }
                Some("failed") => {
                    if let Some(key) = l["intent"].as_u64().and_then(|i| intents.get(&i)) {
                        // A failure that may still have reached the backend
                        // (a timeout) stays unknown; others did nothing.
                        if l["error"] != "timeout" {
                            replay.mutations.remove(key);
                        }
                    }
                }
                Some("awaiting") => {
                    replay.awaited.insert(
                        (
                            s(&l["step"]),
                            s(&l["interface"]),
                            s(&l["operation"]),
                            s(&l["resource"]),
                            l["index"].as_u64().unwrap_or(0) as usize,
                        ),
                        Awaited {
                            change: s(&l["change"]),
                            would: l["would"].clone(),
                        },
                    );
                }
                Some("step-end") => replay.ended.push(l["report"].clone()),
                // A run that stopped for an approval goes on with the step
                // that waited: it runs again, now approved.
                Some("run-end")
                    if l["status"] == "awaiting-approval"
                        && replay
                            .ended
                            .last()
                            .is_some_and(|r| !r["awaiting_approval"].is_null()) =>
                {
                    replay.ended.pop();
                }
                // A run a halt stopped goes on with the step it stopped
                // (which made no change after the halt was read).
                Some("run-end")
                    if l["status"] == "halted"
                        && replay.ended.last().is_some_and(|r| !r["halted"].is_null()) =>
                {
                    replay.ended.pop();
                }
                _ => {}
            }
        }
        replay
    }
}

/// A change an incident's run applied: what, to what, when.
#[derive(Debug, Clone)]
pub struct OwnChange {
    pub run_id: String,
    pub interface: String,
    pub operation: String,
    pub resource: String,
    /// What the change returned (a rollback's `from` and `to`).
    pub result: Value,
    /// Milliseconds since the epoch: when it was set out (intent) and
    /// when it was applied.
    pub intent_ms: u64,
    pub applied_ms: u64,
}

/// Every change the runs of `incident` applied, from their journals. A
/// journal that cannot be read is an error: a step told "nothing of ours"
/// would take the incident's own rollback for the cause. `fresh`: a run
/// this process has just started and holds, which has applied nothing
/// yet, so its journal is not read back.
pub fn own_changes(
    store: &dyn Store,
    incident: &str,
    fresh: Option<&str>,
) -> anyhow::Result<Vec<OwnChange>> {
    let ms = |l: &Value| {
        l["time"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    let mut out = Vec::new();
    use anyhow::Context;
    for run in store
        .incident_runs(incident)
        .with_context(|| format!("listing the runs of incident `{incident}`"))?
        .into_iter()
        .filter(|run| Some(run.as_str()) != fresh)
    {
        let lines = store
            .read_run(&run)
            .with_context(|| format!("reading run `{run}` for the changes it made"))?;
        for applied in lines.iter().filter(|l| l["event"] == "applied") {
            let Some(intent) = lines
                .iter()
                .find(|l| l["event"] == "intent" && l["seq"] == applied["intent"])
            else {
                continue;
            };
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            out.push(OwnChange {
                run_id: run.clone(),
                interface: text(&intent["interface"]),
                operation: text(&intent["operation"]),
                resource: text(&intent["resource"]),
                result: applied["result"].clone(),
                intent_ms: ms(intent),
                applied_ms: ms(applied),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Two changes to one resource in one step, the second waiting for an
    /// approval: each call's preview is kept under its own index, so an
    /// approval is compared with the picture of the very call it was for.
    #[test]
    fn awaited_previews_are_kept_per_call() {
        let awaiting = |index: u64, change: &str| {
            json!({
                "event": "awaiting", "step": "s", "interface": "feature-flags",
                "operation": "set", "resource": "AUTH_X", "index": index,
                "change": change, "would": { "to": change },
            })
        };
        let lines = [
            json!({ "event": "step-start", "step": "s" }),
            awaiting(0, "set `AUTH_X` to on"),
            awaiting(1, "set `AUTH_X` to off"),
        ];
        let replay = Replay::from_journal(&lines);
        let key = |i: usize| {
            (
                "s".to_string(),
                "feature-flags".to_string(),
                "set".to_string(),
                "AUTH_X".to_string(),
                i,
            )
        };
        assert_eq!(replay.awaited.len(), 2);
        assert_eq!(replay.awaited[&key(0)].change, "set `AUTH_X` to on");
        assert_eq!(replay.awaited[&key(1)].change, "set `AUTH_X` to off");
    }

    /// A step that makes the same change twice, killed after each: on the
    /// second resume the first call was replayed (no intent of its own),
    /// so the second call's intent is the step's second call by its
    /// recorded index, not its first; both stay applied and neither is
    /// issued again. A journal from before the index was recorded counts
    /// intents as it did.
    #[test]
    fn a_replayed_call_keeps_the_index_of_the_calls_after_it() {
        let intent = |seq: u64, index: Option<u64>| {
            let mut l = json!({
                "event": "intent", "seq": seq, "step": "s", "interface": "ecs",
                "operation": "rollback", "resource": "svc",
            });
            if let Some(i) = index {
                l["index"] = i.into();
            }
            l
        };
        let applied =
            |intent: u64, r: &str| json!({ "event": "applied", "intent": intent, "result": r });
        let key = |i: usize| {
            (
                "s".to_string(),
                "ecs".to_string(),
                "rollback".to_string(),
                "svc".to_string(),
                i,
            )
        };
        let lines = [
            json!({ "event": "step-start", "step": "s" }),
            intent(2, Some(0)),
            applied(2, "first"),
            json!({ "event": "resume" }),
            json!({ "event": "step-start", "step": "s" }),
            intent(6, Some(1)),
            applied(6, "second"),
        ];
        let replay = Replay::from_journal(&lines);
        assert!(matches!(&replay.mutations[&key(0)], Done::Applied(r) if r == "first"));
        assert!(matches!(&replay.mutations[&key(1)], Done::Applied(r) if r == "second"));
        assert_eq!(replay.applied, 2);
        // Older journals: intents without an index count as before.
        let old = [
            json!({ "event": "step-start", "step": "s" }),
            intent(2, None),
            applied(2, "first"),
            intent(4, None),
            applied(4, "second"),
        ];
        let replay = Replay::from_journal(&old);
        assert!(matches!(&replay.mutations[&key(0)], Done::Applied(r) if r == "first"));
        assert!(matches!(&replay.mutations[&key(1)], Done::Applied(r) if r == "second"));
    }
}
