//! The kill switch: `runbook halt` stops new changes in every run that
//! shares the store (a state directory, a fleet's NATS), `runbook
//! resume-all` lifts it. A halt is a shared value (`Shared::Halts`) read
//! before every change: a run that finds one in force for its runbook
//! stops before that change (it ends `halted`, resumable), and adds
//! itself to the runs the halt stopped, which `resume-all` continues. The
//! value keeps its own record of who halted and who lifted, when and why.
//!
//! A change that read no halt before the halt was written may still be
//! made: the bound is one read of the store per change.

pub use crate::store::Shared;
use crate::store::Store;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most entries of the record kept with the halts (the oldest go first).
const MAX_RECORD: usize = 1000;

/// The halts in force, the runs they stopped, and what was done.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Halts {
    /// Every runbook's runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Halt>,
    /// One runbook's runs, by runbook id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runbooks: BTreeMap<String, Halt>,
    /// Runs a halt stopped, by run id: `resume-all` continues them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stopped: BTreeMap<String, Stopped>,
    /// Halts and lifts, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub record: Vec<Record>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Halt {
    pub by: String,
    pub host: String,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl Halt {
    /// "by `alice` on `host` at TIME: reason".
    pub fn describe(&self) -> String {
        let mut s = format!(
            "by `{}` on `{}` at {}",
            self.by,
            self.host,
            runbook_core::time::rfc3339(self.at_ms)
        );
        if !self.reason.is_empty() {
            s.push_str(&format!(" ({})", self.reason));
        }
        s
    }
}

/// A run a halt stopped before a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stopped {
    pub runbook: String,
    pub incident: String,
    pub step: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// `halt` or `resume-all`.
    pub action: String,
    /// `all` or a runbook id.
    pub scope: String,
    #[serde(flatten)]
    pub who: Halt,
    /// `resume-all`: the runs it continued.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<String>,
}

/// What a halt or a lift is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Runbook(String),
}

impl Scope {
    fn name(&self) -> &str {
        match self {
            Scope::All => "all",
            Scope::Runbook(id) => id,
        }
    }
}

impl Halts {
    /// The halt that stops `runbook`'s changes now, if any.
    /// A runbook's id is matched without regard to case: a halt typed
    /// `rb-0031` stops RB-0031 (a kill switch errs on the side of
    /// stopping).
    pub fn stopping(&self, runbook: &str) -> Option<&Halt> {
        self.all.as_ref().or_else(|| {
            self.runbooks
                .iter()
                .find(|(id, _)| id.eq_ignore_ascii_case(runbook))
                .map(|(_, h)| h)
        })
    }

    /// Whether `scope` is halted now.
    pub fn halted(&self, scope: &Scope) -> Option<&Halt> {
        match scope {
            Scope::All => self.all.as_ref(),
            Scope::Runbook(id) => self
                .runbooks
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(id))
                .map(|(_, h)| h),
        }
    }

    /// Halts `scope`; false (and nothing recorded) when it is halted
    /// already: the first halt, its time and reason, stand.
    pub fn halt(&mut self, scope: &Scope, halt: Halt) -> bool {
        if self.halted(scope).is_some() {
            return false;
        }
        match scope {
            Scope::All => self.all = Some(halt.clone()),
            Scope::Runbook(id) => {
                self.runbooks.insert(id.clone(), halt.clone());
            }
        }
        self.log("halt", scope, halt, Vec::new());
        true
    }

    /// Lifts `scope` (`None`: every halt) and returns the stopped runs no
    /// halt stops any more, which the caller continues. They stay listed
    /// until [`Halts::release`]: a lift whose caller dies, or whose write's
    /// answer was lost, leaves them for the next `resume-all`.
    /// Nothing is recorded when it lifted nothing and frees no run.
    pub fn lift(&mut self, scope: Option<&Scope>, who: Halt) -> Vec<(String, Stopped)> {
        let before = (self.all.is_some(), self.runbooks.len());
        match scope {
            None => {
                self.all = None;
                self.runbooks.clear();
            }
            Some(Scope::All) => self.all = None,
            Some(Scope::Runbook(id)) => {
                self.runbooks.retain(|k, _| !k.eq_ignore_ascii_case(id));
            }
        }
        let lifted = before != (self.all.is_some(), self.runbooks.len());
        let runs: Vec<(String, Stopped)> = self
            .stopped
            .iter()
            .filter(|(_, s)| self.stopping(&s.runbook).is_none())
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        if !lifted && runs.is_empty() {
            return runs;
        }
        let ids = runs.iter().map(|(id, _)| id.clone()).collect();
        self.log("resume-all", scope.unwrap_or(&Scope::All), who, ids);
        runs
    }

    /// Takes `run_id` off the stopped runs once it was continued (queued,
    /// or resumed), unless a halt stopped it again since (`stopped_at_ms`
    /// is when the entry continued was made).
    pub fn release(&mut self, run_id: &str, stopped_at_ms: u64) -> bool {
        if self
            .stopped
            .get(run_id)
            .is_some_and(|s| s.at_ms == stopped_at_ms)
        {
            self.stopped.remove(run_id);
            return true;
        }
        false
    }

    fn log(&mut self, action: &str, scope: &Scope, who: Halt, runs: Vec<String>) {
        self.record.push(Record {
            action: action.to_string(),
            scope: scope.name().to_string(),
            who,
            runs,
        });
        let over = self.record.len().saturating_sub(MAX_RECORD);
        self.record.drain(..over);
    }

    /// Read from a store's shared value (`Null`: none ever).
    pub fn from_value(v: serde_json::Value) -> Result<Self> {
        if v.is_null() {
            return Ok(Self::default());
        }
        serde_json::from_value(v)
            .map_err(|e| anyhow::anyhow!("the store's halts cannot be read: {e}"))
    }
}

/// The halts of `store`.
pub fn read(store: &dyn Store) -> Result<Halts> {
    Halts::from_value(store.read_shared(Shared::Halts)?)
}

/// Changes the halts of `store` with `change` (false: leave them), each
/// process after the other; returns them as they are after it.
pub fn change(
    store: &dyn Store,
    change: &mut (dyn FnMut(&mut Halts) -> bool + Send),
) -> Result<Halts> {
    let mut after = None;
    let mut broken = None;
    store.change_shared(Shared::Halts, &mut |v| {
        broken = None;
        let mut halts = match Halts::from_value(v.clone()) {
            Ok(h) => h,
            Err(e) => {
                broken = Some(e);
                return false;
            }
        };
        let changed = change(&mut halts);
        if changed {
            *v = serde_json::to_value(&halts).unwrap_or_default();
        }
        after = Some(halts);
        changed
    })?;
    if let Some(e) = broken {
        return Err(e);
    }
    after.ok_or_else(|| anyhow::anyhow!("the halts were not read"))
}

/// Takes `run_id` off the stopped runs, whatever entry it has (a run
/// being continued; a halt still in force lists it again when it stops
/// it again).
pub fn unlist(store: &dyn Store, run_id: &str) -> Result<()> {
    change(store, &mut |h| h.stopped.remove(run_id).is_some()).map(|_| ())
}

/// The person's record of a halt or lift made now.
pub fn now(reason: &str) -> Halt {
    Halt {
        by: runbook_core::whoami::who(),
        host: runbook_core::whoami::hostname(),
        at_ms: runbook_core::time::now_ms(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(by: &str) -> Halt {
        Halt {
            by: by.into(),
            host: "h".into(),
            at_ms: 1,
            reason: String::new(),
        }
    }

    fn stopped(runbook: &str) -> Stopped {
        Stopped {
            runbook: runbook.into(),
            incident: "i".into(),
            step: "rollback".into(),
            at_ms: 2,
        }
    }

    #[test]
    fn a_halt_stops_its_scope_and_a_lift_frees_only_what_no_halt_stops() {
        let mut h = Halts::default();
        assert!(h.stopping("RB-0031").is_none());
        assert!(h.halt(&Scope::Runbook("rb-0031".into()), who("alice")));
        assert_eq!(h.stopping("RB-0031").unwrap().by, "alice");
        // Halted already: the first halt stands, nothing recorded.
        assert!(!h.halt(&Scope::Runbook("RB-0031".into()), who("zed")));
        assert_eq!(h.stopping("RB-0031").unwrap().by, "alice");
        assert!(h.stopping("RB-0107").is_none());
        assert!(h.halt(&Scope::All, who("bob")));
        assert_eq!(h.stopping("RB-0107").unwrap().by, "bob");
        h.stopped.insert("r1".into(), stopped("RB-0031"));
        h.stopped.insert("r2".into(), stopped("RB-0107"));
        // Lifting `all` frees RB-0107's run; RB-0031 is still halted.
        let freed = h.lift(Some(&Scope::All), who("carol"));
        assert_eq!(
            freed.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            ["r2"]
        );
        assert!(h.stopping("RB-0031").is_some());
        // Listed until continued: a second lift finds it again.
        assert!(h.release("r2", 2));
        let freed = h.lift(None, who("carol"));
        assert_eq!(
            freed.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            ["r1"]
        );
        // Stopped again since (a later entry): not taken off.
        assert!(!h.release("r1", 1));
        assert!(h.release("r1", 2));
        assert!(h.stopped.is_empty() && h.stopping("RB-0031").is_none());
        // A lift of nothing, freeing nothing: not recorded.
        assert!(h.lift(None, who("carol")).is_empty());
        let actions: Vec<&str> = h.record.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, ["halt", "halt", "resume-all", "resume-all"]);
        assert_eq!(h.record[3].runs, ["r1"]);
        let back = Halts::from_value(serde_json::to_value(&h).unwrap()).unwrap();
        assert_eq!(back, h);
        assert!(Halts::from_value(serde_json::json!({"surprise": 1})).is_err());
    }
}
