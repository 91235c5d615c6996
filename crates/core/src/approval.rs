//! What a run's approval policy is and what was decided about a change:
//! the data every layer records. Who decides (the terminal, a flag) is
//! `runbook_capabilities::approval`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// How mutations are handled in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Everything is approved up front (`--yes`, and simulations).
    All,
    /// Only these steps (`--approve STEP`); others are asked for, or stop
    /// the run when nobody can be asked.
    Steps(BTreeSet<String>),
    /// Nothing is performed: each mutation is recorded as what it would do.
    DryRun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Approved,
    DryRun,
    Refused,
    AwaitingApproval,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub decision: Verdict,
    /// `--yes`, `--approve`, `interactive`, `simulation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub how: Option<String>,
    /// `$USER` when a person approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// What the mutation does, e.g. "set `K` from `false` to `true`".
    pub change: String,
}
