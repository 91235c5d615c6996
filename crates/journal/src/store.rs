//! Durable runs: every run has an id and a journal, and belongs to an
//! incident; changes take leases on what they change.
//!
//! The journal (`runs/RUN_ID.jsonl` in the state directory) is a chained
//! log ([`crate::chain`]), its lines durable before the host goes on
//! where safety needs it, with the next such line elsewhere
//! ([`crate::log::durable`]):
//! `run-start` (runbook and plugin digests, inputs, backend, incident,
//! who), `step-start`, `intent` before every change (what, its
//! precondition, who approved it and how, the lease's fencing token),
//! `applied` or `failed` after it, `step-end` (the step's whole report),
//! and `run-end`. From it `show` renders a run (a crashed one too) and
//! `resume` continues one: ended steps are replayed ([`crate::replay`]),
//! not run again, and a change that has an intent but no result is checked
//! against the real backend before anything is issued again.
//!
//! The [`Store`] trait is what a journal and its leases need from where
//! they are kept; [`crate::local::LocalStore`] keeps them in a directory
//! on this machine (OS file locks, safe across processes). A store shared
//! by several machines implements the same trait.

use crate::holder::{Held, Holder};
use crate::lease::Lease;
use crate::log::Journal;
use anyhow::Result;
use runbook_core::error::hinted;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// The shared values every process of a store reads and changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    /// The halts ([`crate::halt::Halts`]).
    Halts,
    /// The changes live runs made, counted for rate limits
    /// ([`crate::recent`]).
    Changes,
    /// Simulated runs' changes, counted apart (a rehearsal never uses up
    /// production's limit, nor crowds its counts out).
    SimulatedChanges,
}

impl Shared {
    /// Its file name (a state directory) and key (a fleet's state).
    pub fn key(self) -> &'static str {
        match self {
            Shared::Halts => "halts",
            Shared::Changes => "changes",
            Shared::SimulatedChanges => "simulated-changes",
        }
    }
}

/// Where journals and leases are kept.
pub trait Store: Send + Sync {
    /// Starts `holder`'s run of `incident`: refuses while another run of
    /// the incident is unfinished.
    fn start_run(&self, incident: &str, holder: &Holder) -> Result<Journal>;
    /// Reopens an unfinished run to continue it (refused while it runs).
    fn reopen_run(&self, run_id: &str) -> Result<Journal>;
    /// A run's journal lines.
    fn read_run(&self, run_id: &str) -> Result<Vec<Value>>;
    /// Where a run's journal is, for people (a file, a stream).
    fn journal_location(&self, run_id: &str) -> Option<String>;
    /// Whether a process is executing the run right now.
    fn is_running(&self, run_id: &str) -> bool;
    /// The runs of an incident, oldest first.
    fn incident_runs(&self, incident: &str) -> Result<Vec<String>>;
    /// Every run, newest first, at most `limit`.
    fn recent_runs(&self, limit: usize) -> Result<Vec<String>>;
    /// A lease on `resource`, waiting up to `wait` for it.
    fn lease(
        &self,
        resource: &str,
        holder: &Holder,
        wait: Duration,
    ) -> Result<Box<dyn Lease>, Box<Held>>;
    /// A small JSON value every process sharing the store reads and
    /// changes (the halts, the counted changes); `Null` if never written.
    fn read_shared(&self, name: Shared) -> Result<Value>;
    /// Changes `name` with `change` (false: leave it), written only if no
    /// other process wrote it in between (else read and changed again, a
    /// bounded number of times). Returns whether this call wrote it.
    fn change_shared(
        &self,
        name: Shared,
        change: &mut (dyn FnMut(&mut Value) -> bool + Send),
    ) -> Result<bool>;
}

/// Why a run of `incident` may not start: `earlier` has not finished
/// (`running`: a process executes it right now).
pub fn incident_taken(
    incident: &str,
    earlier: &str,
    by: Option<Holder>,
    running: bool,
) -> anyhow::Error {
    let who = by
        .as_ref()
        .map(Holder::describe)
        .unwrap_or_else(|| format!("run `{earlier}`"));
    if running {
        anyhow::Error::new(Held {
            what: format!("incident `{incident}`"),
            by,
            unknown: None,
        })
        .context(format!(
            "incident `{incident}` is being handled by {who}, which is still running"
        ))
    } else {
        hinted(
            format!(
                "incident `{incident}` has an unfinished run: {who} did not finish (it crashed, was stopped, or waits for an approval)"
            ),
            format!(
                "continue it with `runbook resume {earlier}` (see what it did with `runbook show {earlier}`); or start over with `--new`"
            ),
        )
    }
}

/// The state directory: `--state-dir`, `RUNBOOK_STATE_DIR`, else
/// `$XDG_STATE_HOME/runbook`, else `~/.local/state/runbook`.
pub fn default_state_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("RUNBOOK_STATE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return Some(PathBuf::from(d).join("runbook"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/runbook"))
}

pub fn is_run_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}
