//! What a run's policies are told about it: the runbook, each step and
//! its plugin (digest, signers, where it came from), the run, its
//! incident and who started it; and the questions about people (`may`:
//! who runs, resumes, approves).

use crate::plan::Plan;
use crate::request::Approvals;
use runbook_capabilities::guardrails::Guard;
use runbook_policy::{Policies, RunFacts, StepFacts};
use serde_json::Value;
use std::sync::Arc;

pub fn of_run(
    policies: &Arc<Policies>,
    plan: &Plan,
    (run_id, incident, mode, incident_start_ms): (&str, &str, &str, Option<u64>),
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
            incident_start_ms,
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

/// What a run's journal says its policies need to know of it: the
/// runbook and the run (from its `run-start`).
pub fn journaled_facts(start: &Value, run_id: &str) -> (runbook_policy::RunbookFacts, RunFacts) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        runbook_policy::RunbookFacts {
            id: s(&start["runbook"]["id"]),
            title: s(&start["runbook"]["title"]),
            service: s(&start["runbook"]["service"]),
        },
        RunFacts {
            run_id: run_id.to_string(),
            mode: if start["policy"]["dry_run"] == true {
                format!("{}, dry run", s(&start["backend"]["kind"]))
            } else {
                s(&start["backend"]["kind"])
            },
            incident: s(&start["incident"]),
            severity: s(&start["severity"]),
            starter: s(&start["starter"]),
            incident_start_ms: start["backend"]["incident_start"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64),
        },
    )
}

/// May `person` (in `groups`) do `act` (on `step`'s `change`, for an
/// approval)? An error naming the policy if not: nothing is done.
pub fn may(
    policies: &Policies,
    (person, groups): (&str, &[String]),
    act: runbook_policy::Act,
    (runbook, run): (&runbook_policy::RunbookFacts, &RunFacts),
    (step, change): (&str, &str),
) -> anyhow::Result<()> {
    let who = runbook_policy::Approval {
        person: person.to_string(),
        groups: groups.to_vec(),
    };
    let q = runbook_policy::PersonQuestion {
        person: &who,
        act,
        runbook,
        run,
        step,
        change,
        now_ms: runbook_core::time::now_ms(),
    };
    // Asked on a thread of its own: Cedar measures the stack it is given,
    // and a caller may be deep in an async runtime.
    let answer = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("policy-person".into())
            .spawn_scoped(s, || policies.may(&q))
            .map(|h| h.join())
    });
    let answer = match answer {
        Ok(Ok(a)) => a,
        _ => anyhow::bail!("the organisation's policies could not be asked; nothing was done"),
    };
    if answer.verdict == runbook_policy::Verdict::Allow {
        return Ok(());
    }
    Err(runbook_core::error::hinted(
        format!("{}; nothing was done", policies.person_refusal(&q, &answer)),
        format!(
            "the organisation's policies (`{}`) decide who may run, resume and approve what: ask whoever owns them",
            policies.dir.display()
        ),
    ))
}

/// May whoever starts this run (its starter) run the runbook?
pub fn may_start(
    policies: &Policies,
    plan: &Plan,
    (run_id, incident, mode, incident_start_ms): (&str, &str, &str, Option<u64>),
    approvals: &Approvals,
) -> anyhow::Result<()> {
    let starter = approvals
        .starter
        .clone()
        .unwrap_or_else(runbook_core::whoami::who);
    let rb = &plan.runbook;
    let runbook = runbook_policy::RunbookFacts {
        id: rb.runbook_id.clone(),
        title: rb.title.clone(),
        service: rb.service.clone(),
    };
    let run = RunFacts {
        run_id: run_id.to_string(),
        mode: mode.to_string(),
        incident: incident.to_string(),
        severity: approvals.severity.clone().unwrap_or_default(),
        starter: starter.clone(),
        incident_start_ms,
    };
    may(
        policies,
        (&starter, &[]),
        runbook_policy::Act::Run,
        (&runbook, &run),
        ("", ""),
    )
}

/// May whoever continues the run (`start`: its `run-start`) resume it?
/// A fleet's worker continues a run as its own user.
pub fn may_resume(
    policies: &Policies,
    start: &Value,
    run_id: &str,
    approvals: &Approvals,
) -> anyhow::Result<()> {
    let who = approvals
        .starter
        .clone()
        .unwrap_or_else(runbook_core::whoami::who);
    let (runbook, run) = journaled_facts(start, run_id);
    may(
        policies,
        (&who, &[]),
        runbook_policy::Act::Resume,
        (&runbook, &run),
        ("", ""),
    )
}
