//! One run's journal, open for appending: where its lines go (a chained
//! file, a JetStream subject) behind [`JournalLog`].

use crate::chain::ChainLog;
use anyhow::Result;
use serde_json::Value;

/// Where one run's journal lines go: a chained file ([`ChainLog`]) or a
/// JetStream subject (in `runbook-fleet`).
pub trait JournalLog: Send + Sync {
    /// Appends one record (an object) as the next chained line; returns
    /// its `seq`. An error means the line was not written.
    fn append(&self, fields: Value) -> Result<u64>;
    /// Where the lines are, for people.
    fn location(&self) -> String;
}

impl JournalLog for ChainLog {
    fn append(&self, fields: Value) -> Result<u64> {
        Ok(ChainLog::append(self, fields)?.1.seq)
    }

    fn location(&self) -> String {
        self.path().display().to_string()
    }
}

/// One run's journal, open for appending, held by this process.
pub struct Journal {
    log: Box<dyn JournalLog>,
    pub run_id: String,
    /// Held while this process executes the run (a file lock, a lease).
    _running: Box<dyn Send + Sync>,
}

impl Journal {
    pub fn new(log: Box<dyn JournalLog>, run_id: &str, running: Box<dyn Send + Sync>) -> Self {
        Self {
            log,
            run_id: run_id.to_string(),
            _running: running,
        }
    }

    /// Appends one record; errors are loud (stderr) but do not stop an
    /// incident response already under way.
    pub fn record(&self, event: &str, fields: Value) -> u64 {
        match self.try_record(event, fields) {
            Ok(seq) => seq,
            Err(e) => {
                eprintln!(
                    "warning: could not write the journal `{}`: {e:#}",
                    self.log.location()
                );
                0
            }
        }
    }

    /// Appends one record, or says why it could not: what must be in the
    /// journal before it happens (a change's intent) waits on this.
    pub fn try_record(&self, event: &str, mut fields: Value) -> Result<u64> {
        if let Value::Object(map) = &mut fields {
            map.insert("event".into(), event.into());
            map.insert("run_id".into(), self.run_id.clone().into());
            map.insert(
                "time".into(),
                runbook_core::time::rfc3339_millis(runbook_core::time::now_ms()).into(),
            );
        }
        self.log.append(fields)
    }

    /// Where the journal is, for people.
    pub fn location(&self) -> String {
        self.log.location()
    }
}
