//! One run's journal, open for appending: where its lines go (a chained
//! file, a JetStream subject) behind [`JournalLog`].
//!
//! Fail-stop: once a line could not be written, the journal may have a
//! hole (or a torn line) where that line belongs, so nothing more is
//! written to it by this process and every later [`Journal::record`]
//! fails too. The run stops before its next change ([`Journal::failed`]);
//! `runbook resume` continues it from what the journal does hold.
//!
//! Group commit: only the lines safety needs are made durable before the
//! host goes on ([`durable`]); the others wait for the next durable line
//! and become durable with it, in one `fsync` (a file) or one publish (a
//! JetStream subject). A crash can then lose only lines after the last
//! durable one, and those are lines that resume recomputes.

use crate::chain::ChainLog;
use anyhow::Result;
use serde_json::Value;
use std::sync::Mutex;

/// Where one run's journal lines go: a chained file ([`ChainLog`]) or a
/// JetStream subject (in `runbook-fleet`).
pub trait JournalLog: Send + Sync {
    /// Appends one record (an object) as the next chained line; returns
    /// its `seq`. `durable`: the line, and every line before it, is kept
    /// (on disk, stored by the server) before this returns; otherwise it
    /// may be kept only with the next durable line. An error means the
    /// line was not written.
    fn append(&self, fields: Value, durable: bool) -> Result<u64>;
    /// Where the lines are, for people.
    fn location(&self) -> String;
}

impl JournalLog for ChainLog {
    fn append(&self, fields: Value, durable: bool) -> Result<u64> {
        let written = if durable {
            ChainLog::append(self, fields)
        } else {
            ChainLog::append_later(self, fields)
        };
        Ok(written?.1.seq)
    }

    fn location(&self) -> String {
        self.path().display().to_string()
    }
}

/// Whether a line of `event` must be durable before the host goes on.
///
/// The rule: a line may wait for the next durable one if and only if
/// losing it (with every line after it up to that one) leaves a journal
/// that resume continues just as it would have with the line: it does
/// again what the line recorded. Such a line is lost by a machine that
/// stops before the next durable line is kept (a file), or by a process
/// killed before then (JetStream: the line waits in memory). So:
/// - `step-start`: a step without its `step-end` is run again on resume,
///   and its start recorded again.
/// - `awaiting`: the step's `step-end` and the run's `awaiting-approval`
///   end, both durable, follow it before the run is parked; without them
///   the step runs again and asks again.
/// - `policy`: the organisation's policies' decision on a change; the
///   change's `intent`, or its `awaiting` line and the run's end, or the
///   step's end (all durable but `awaiting`) follow it; without them the
///   step runs again and the policies are asked again.
///
/// Every other line is durable at once: `run-start` and `resume` (a run
/// exists, who holds it), `intent` (before its change is issued),
/// `applied` and `failed` (a change's result: resume cannot always tell
/// it from the backend, a notification not at all, and the run's budget
/// and own changes count it), `step-end` (a step's outcome, so no line
/// waits past its step's end), `run-end`, `host-panic` and `page`.
pub fn durable(event: &str) -> bool {
    !matches!(event, "step-start" | "awaiting" | "policy")
}

/// A journal line that could not be written: the run must stop before
/// its next change (the CLI's exit status 9).
#[derive(Debug)]
pub struct Unrecorded {
    /// Where the journal is.
    pub location: String,
    /// The event that was not written.
    pub event: String,
    /// Why.
    pub why: String,
}

impl std::fmt::Display for Unrecorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the journal `{}` could not record `{}`: {}",
            self.location, self.event, self.why
        )
    }
}

impl std::error::Error for Unrecorded {}

/// One run's journal, open for appending, held by this process.
pub struct Journal {
    log: Box<dyn JournalLog>,
    pub run_id: String,
    /// The first write that failed: after it, nothing is written.
    failed: Mutex<Option<String>>,
    /// A torn last line cut off when the run was reopened (what a crash
    /// mid-write leaves): `resume` records that it did.
    pub torn: Option<Vec<u8>>,
    /// Held while this process executes the run (a file lock, a lease).
    _running: Box<dyn Send + Sync>,
}

impl Journal {
    pub fn new(log: Box<dyn JournalLog>, run_id: &str, running: Box<dyn Send + Sync>) -> Self {
        Self {
            log,
            run_id: run_id.to_string(),
            failed: Mutex::new(None),
            torn: None,
            _running: running,
        }
    }

    /// The journal, reopened after a torn last line was cut off.
    pub fn with_torn(mut self, torn: Option<Vec<u8>>) -> Self {
        self.torn = torn;
        self
    }

    /// Appends one record; returns its `seq`. An error ([`Unrecorded`])
    /// means it was not written, and that no later record will be.
    pub fn record(&self, event: &str, mut fields: Value) -> Result<u64> {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = failed.as_ref() {
            return Err(Unrecorded {
                location: self.log.location(),
                event: event.to_string(),
                why: format!(
                    "an earlier line could not be written ({first}), so this journal takes no more"
                ),
            }
            .into());
        }
        if let Value::Object(map) = &mut fields {
            map.insert("event".into(), event.into());
            map.insert("run_id".into(), self.run_id.clone().into());
            map.insert(
                "time".into(),
                runbook_core::time::rfc3339_millis(runbook_core::time::now_ms()).into(),
            );
        }
        // One failpoint per event: `journal-intent`, `journal-applied`, ...
        fail::fail_point!(&format!("journal-{event}"), |how| {
            let why = format!("failpoint `journal-{event}` ({})", how.unwrap_or_default());
            *failed = Some(why.clone());
            Err(Unrecorded {
                location: self.log.location(),
                event: event.to_string(),
                why,
            }
            .into())
        });
        self.log.append(fields, durable(event)).map_err(|e| {
            let why = format!("{e:#}");
            *failed = Some(format!("`{event}`: {why}"));
            Unrecorded {
                location: self.log.location(),
                event: event.to_string(),
                why,
            }
            .into()
        })
    }

    /// Why this journal takes no more lines, if a write failed.
    pub fn failed(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Where the journal is, for people.
    pub fn location(&self) -> String {
        self.log.location()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails its second append, and counts what reached it.
    struct Flaky(AtomicUsize);

    impl JournalLog for Flaky {
        fn append(&self, _: Value, _: bool) -> Result<u64> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            anyhow::ensure!(n != 2, "disk full");
            Ok(n as u64)
        }
        fn location(&self) -> String {
            "flaky".into()
        }
    }

    #[test]
    fn after_one_failed_write_the_journal_takes_no_more() {
        let j = Journal::new(Box::new(Flaky(AtomicUsize::new(0))), "r", Box::new(()));
        assert_eq!(j.record("a", serde_json::json!({})).unwrap(), 1);
        assert!(j.failed().is_none());
        let err = j.record("b", serde_json::json!({})).unwrap_err();
        assert!(err.downcast_ref::<Unrecorded>().is_some());
        assert!(
            err.to_string().contains("could not record `b`: disk full"),
            "{err}"
        );
        // The log would take the third line; the journal does not offer it.
        let err = j.record("c", serde_json::json!({})).unwrap_err();
        assert!(
            err.to_string()
                .contains("an earlier line could not be written"),
            "{err}"
        );
        assert!(j.failed().unwrap().contains("disk full"));
    }
}
