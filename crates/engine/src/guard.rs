//! What a run's policies are told about it: the runbook, each step and
//! its plugin (digest, signers, where it came from), the run, its
//! incident and who started it.

use crate::plan::Plan;
use crate::request::Approvals;
use runbook_capabilities::guardrails::Guard;
use runbook_policy::{Policies, RunFacts, StepFacts};
use serde_json::Value;
use std::sync::Arc;

pub fn of_run(
    policies: &Arc<Policies>,
    plan: &Plan,
    (run_id, incident, mode): (&str, &str, &str),
    approvals: &Approvals,
    journaled: &[Value],
    store: Option<Arc<dyn runbook_journal::store::Store>>,
) -> Guard {
    // A resumed run's starter is the one its journal names.
    let starter = runbook_journal::approvals::starter(journaled)
        .or_else(|| approvals.starter.clone())
        .unwrap_or_else(runbook_core::whoami::who);
    let severity = journaled
        .iter()
        .find(|l| l["event"] == "run-start")
        .and_then(|s| s["severity"].as_str())
        .map(str::to_string)
        .or_else(|| approvals.severity.clone())
        .unwrap_or_default();
    Guard::new(
        policies.clone(),
        RunFacts {
            run_id: run_id.to_string(),
            mode: mode.to_string(),
            incident: incident.to_string(),
            severity,
            starter,
        },
        step_facts(plan),
        store,
    )
}

/// Each step of `plan` as the policies see it.
pub fn step_facts(plan: &Plan) -> Vec<StepFacts> {
    let rb = &plan.runbook;
    plan.steps
        .iter()
        .map(|s| StepFacts {
            runbook_id: rb.runbook_id.clone(),
            title: rb.title.clone(),
            service: rb.service.clone(),
            step_id: s.def.id.to_string(),
            plugin: s.plugin.name().to_string(),
            plugin_digest: s.plugin.digest.clone(),
            signers: s.plugin.signers.clone(),
            origin: if s.plugin.builtin {
                "builtin".to_string()
            } else {
                s.plugin.component_path.display().to_string()
            },
        })
        .collect()
}
