//! The audit log: one JSON line per capability call, allowed or denied,
//! and per decision (a refusal, a change's intent, a step's end, a run's
//! end), chained and fsync'd as it happens, so a crash loses at most the
//! call in flight and an edit shows.

use crate::chain::ChainLog;
use anyhow::{Context, Result};
use runbook_core::grants::{Access, Interface};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Who is calling, for the report and the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Caller {
    pub run_id: String,
    pub step: String,
    pub plugin: String,
    pub plugin_digest: String,
}

/// One capability call, as the report and the audit log keep it. Strings
/// in `args` and `result` are clipped (see `runbook_capabilities::limits`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    pub interface: Interface,
    pub operation: String,
    pub access: Access,
    pub resource: String,
    pub args: serde_json::Value,
    pub allowed: bool,
    /// The value returned, or the error's text.
    pub result: serde_json::Value,
    /// The error kind (`denied`, `unavailable`, ...) when the call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For mutations: approved (by whom, how), dry-run, refused or awaiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<runbook_core::approval::Decision>,
    /// Run time (simulated under `--sim`) when the call was made.
    pub at_ms: u64,
    pub duration_us: u64,
    /// When the call began on this machine's monotonic clock (the gate
    /// reads it anyway): a call's span is placed by it. Not recorded.
    #[serde(skip)]
    pub began: Option<std::time::Instant>,
}

/// The audit log, in the journal's chained format ([`crate::chain`]):
/// `runbook verify-log FILE` names the first line altered, removed or
/// reordered. Several runs may append to one file at once.
pub struct AuditLog {
    log: ChainLog,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    run_time: String,
    run_id: &'a str,
    step: &'a str,
    plugin: &'a str,
    plugin_digest: &'a str,
    #[serde(flatten)]
    call: &'a CallRecord,
}

impl AuditLog {
    /// Opens `path` for appending (created if missing).
    pub fn open(path: &Path) -> Result<Self> {
        let log = ChainLog::open(path, true)
            .with_context(|| format!("opening the audit log `{}`", path.display()))?;
        Ok(Self { log })
    }

    /// Writes one call; returns the bytes written.
    pub fn record(&self, caller: &Caller, call: &CallRecord) -> usize {
        self.write(
            serde_json::to_value(Line {
                time: runbook_core::time::rfc3339_millis(runbook_core::time::now_ms()),
                run_time: runbook_core::time::rfc3339(call.at_ms),
                run_id: &caller.run_id,
                step: &caller.step,
                plugin: &caller.plugin,
                plugin_digest: &caller.plugin_digest,
                call,
            })
            .unwrap_or_default(),
        )
    }

    /// Any other event worth keeping (a refusal, a step's end, the run's
    /// end): `fields` plus when, which run and what happened.
    pub fn event(&self, run_id: &str, event: &str, fields: serde_json::Value) {
        let mut line = serde_json::json!({
            "time": runbook_core::time::rfc3339_millis(runbook_core::time::now_ms()),
            "run_id": run_id,
            "event": event,
        });
        if let (Some(line), serde_json::Value::Object(fields)) = (line.as_object_mut(), fields) {
            line.extend(fields);
        }
        self.write(line);
    }

    fn write(&self, value: serde_json::Value) -> usize {
        // An audit write that fails must be loud, but must not take the
        // incident response down with it.
        match self.log.append(value) {
            Ok((n, _)) => n,
            Err(e) => {
                eprintln!(
                    "warning: could not write the audit log `{}`: {e:#}",
                    self.log.path().display()
                );
                0
            }
        }
    }
}
