//! What one run is given: its ids, its backends, audit log, approver,
//! durability and budget, and who is told each step as it ends.

use crate::report::StepReport;
use crate::telemetry::RunTrace;
use runbook_capabilities::approval::Approver;
use runbook_capabilities::backends::Backends;
use runbook_capabilities::durable::{Budget, Durable};
use runbook_journal::audit::AuditLog;
use std::sync::Arc;

/// Told each step's report as the step ends.
pub type OnStep = Box<dyn Fn(&StepReport) + Send + Sync>;

pub struct RunConfig {
    pub run_id: String,
    /// The incident the run belongs to (steps see it).
    pub incident: String,
    pub mode: String,
    pub backends: Backends,
    pub audit: Option<Arc<AuditLog>>,
    pub approver: Arc<Approver>,
    /// The run's journal, leases and (on resume) what it already did.
    pub durable: Option<Durable>,
    /// Changes this run may still make.
    pub budget: Arc<Budget>,
    /// Told each step's report as the step ends (the timeline as it goes).
    pub on_step: Option<OnStep>,
    /// The run's span, when tracing is on: each step's spans go under it.
    pub trace: Option<RunTrace>,
    /// The organisation's policies, asked before every change.
    pub guard: Option<Arc<runbook_capabilities::guardrails::Guard>>,
}

impl RunConfig {
    /// A run with no journal and the default budget (tests, benches).
    pub fn simple(run_id: &str, mode: &str, backends: Backends, approver: Arc<Approver>) -> Self {
        Self {
            run_id: run_id.into(),
            incident: run_id.into(),
            mode: mode.into(),
            backends,
            audit: None,
            approver,
            durable: None,
            budget: Budget::new(runbook_core::runbook::DEFAULT_MAX_MUTATIONS, 0),
            on_step: None,
            trace: None,
            guard: None,
        }
    }

    /// Journals `event` with `fields()`, built only when there is a journal.
    /// An error: it could not be written, and the run must stop.
    pub(crate) fn journal(
        &self,
        event: &str,
        fields: impl FnOnce() -> serde_json::Value,
    ) -> anyhow::Result<()> {
        match &self.durable {
            Some(d) => d.journal.record(event, fields()).map(|_| ()),
            None => Ok(()),
        }
    }
}
