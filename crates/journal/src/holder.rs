//! Who holds a run, an incident or a resource: named to whoever finds it
//! in their way (Terraform's lock info: who, where, since when).

use runbook_core::whoami::{hostname, who};
use serde::{Deserialize, Serialize};

/// Who started something, from where, when: shown to whoever finds it
/// in their way.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub run_id: String,
    pub who: String,
    pub host: String,
    pub pid: u32,
    /// RFC 3339.
    pub since: String,
}

impl Holder {
    pub fn me(run_id: &str) -> Self {
        Self {
            run_id: run_id.to_string(),
            who: who(),
            host: hostname(),
            pid: std::process::id(),
            since: runbook_core::time::rfc3339(runbook_core::time::now_ms()),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "run `{}` (started by {} on {}, pid {}, since {})",
            self.run_id, self.who, self.host, self.pid, self.since
        )
    }
}

/// A resource or incident another run holds.
#[derive(Debug)]
pub struct Held {
    pub what: String,
    pub by: Option<Holder>,
    /// Set when whether it is held could not be found out (the store did
    /// not answer): why.
    pub unknown: Option<String>,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.unknown, &self.by) {
            (Some(why), _) => write!(
                f,
                "{} could not be leased: {why} (is the journal store reachable?)",
                self.what
            ),
            (None, Some(h)) => write!(f, "{} is held by {}", self.what, h.describe()),
            (None, None) => write!(f, "{} is held by another run", self.what),
        }
    }
}

impl std::error::Error for Held {}

impl Held {
    /// Whether `e` is, or was caused by, a hold: the run, incident or
    /// resource is another's now, or the store did not say whose.
    pub fn in_chain(e: &anyhow::Error) -> bool {
        e.chain().any(|c| c.downcast_ref::<Held>().is_some())
    }
}
