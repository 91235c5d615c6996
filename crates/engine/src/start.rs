//! What a run is made of before its first step: the runbook and plan
//! loaded and checked against the backend, the audit log opened, a run id,
//! and the journal's first line (`run-start`), which says everything
//! `show` and `resume` need.

use crate::backend::Backend;
use crate::plan::Plan;
use crate::runtime::Runtime;
use crate::sources::Sources;
use anyhow::Result;
use runbook_core::runbook::Runbook;
use runbook_journal::audit::AuditLog;
use runbook_journal::holder::Holder;
use runbook_journal::log::Journal;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything a run (or a resumed one) is made of.
pub struct Prepared {
    pub plan: Arc<Plan>,
    pub backend: Backend,
    pub audit: Option<Arc<AuditLog>>,
    /// The organisation's guardrails (`--policies`), asked before every
    /// change of a run.
    pub policies: Option<Arc<runbook_policy::Policies>>,
}

impl Prepared {
    /// `plan` against `backend`: every resource its steps are granted must
    /// be provided.
    pub fn new(plan: Arc<Plan>, backend: Backend) -> Result<Self> {
        backend.check(&plan)?;
        Ok(Self {
            plan,
            backend,
            audit: None,
            policies: None,
        })
    }
}

/// Loads the runbook and its plan, checks the plan against the backend and,
/// when `sources.locked`, against `runbook.lock`. A refusal is written to
/// the audit log too: it is a security decision.
pub fn prepare(
    runtime: &Arc<Runtime>,
    runbook_path: &Path,
    backend: Backend,
    sources: &Sources,
    audit_log: Option<&Path>,
    run_id: &str,
) -> Result<Prepared> {
    let runbook = Runbook::load(runbook_path)?;
    let audit = audit_log.map(AuditLog::open).transpose()?.map(Arc::new);
    let loaded =
        load_plan(runtime, runbook, sources).and_then(|plan| backend.check(&plan).map(|()| plan));
    let plan = match loaded {
        Ok(plan) => Arc::new(plan),
        Err(err) => {
            if let Some(audit) = &audit {
                audit.event(
                    run_id,
                    "refused",
                    json!({
                        "runbook": runbook_path.display().to_string(),
                        "reason": format!("{err:#}"),
                    }),
                );
            }
            return Err(err);
        }
    };
    plan.prefetch(runtime);
    Ok(Prepared {
        plan,
        backend,
        audit,
        policies: sources.policies.clone(),
    })
}

/// A plan for `runbook`, refused when `sources.locked` and it differs from
/// `runbook.lock`.
pub fn load_plan(runtime: &Runtime, runbook: Runbook, sources: &Sources) -> Result<Plan> {
    let plan = Plan::load(runtime, runbook, sources)?;
    if sources.locked {
        crate::lock::verify(&plan)?;
    }
    Ok(plan)
}

/// A fresh run id: 48 random bits, in hex.
pub fn run_id() -> String {
    let mut bytes = [0u8; 6];
    if getrandom::fill(&mut bytes).is_err() {
        use std::hash::{BuildHasher, RandomState};
        let seed = RandomState::new().hash_one((std::process::id(), runbook_core::time::now_ms()));
        bytes.copy_from_slice(&seed.to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

pub(crate) fn file_digest(p: &Path) -> String {
    runbook_core::files::read_bytes(p, "file", runbook_core::files::MAX_TEXT)
        .map(|b| runbook_core::hash::sha256_hex(&b))
        .unwrap_or_default()
}

/// What the journal's first line records about the request.
pub(crate) struct Started<'a> {
    pub runbook_path: &'a Path,
    pub incident: &'a str,
    pub incident_start: Option<&'a str>,
    pub audit_log: Option<&'a Path>,
    pub sources: &'a Sources,
    pub approvals: &'a crate::request::Approvals,
    pub holder: &'a Holder,
    pub since_ms: u64,
    /// The run's span, when tracing is on.
    pub trace: Option<&'a crate::telemetry::RunTrace>,
}

/// The journal's first line: what runs, against what, for which
/// incident, started by whom; what `show` and `resume` need.
pub(crate) fn record_start(journal: &Journal, p: &Prepared, s: &Started<'_>) -> Result<()> {
    let plan = &p.plan;
    let plugins: serde_json::Map<String, Value> = plan
        .steps
        .iter()
        .map(|s| {
            (
                s.plugin.name().to_string(),
                json!({ "sha256": s.plugin.digest, "source": s.plugin.source() }),
            )
        })
        .collect();
    let inputs: serde_json::Map<String, Value> = plan
        .steps
        .iter()
        .map(|s| {
            let pairs: serde_json::Map<String, Value> = s
                .def
                .input_pairs()
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect();
            (s.def.id.to_string(), pairs.into())
        })
        .collect();
    let backend_path = absolute(p.backend.path());
    let sources = s.sources;
    let mut start = json!({
            "holder": s.holder,
            "incident": s.incident,
            "runbook": {
                "path": absolute(s.runbook_path),
                "id": plan.runbook.runbook_id,
                "title": plan.runbook.title,
                "sha256": file_digest(s.runbook_path),
                "escalation": plan.runbook.escalation,
                "max_mutations": plan.runbook.max_mutations,
                "service": plan.runbook.service,
                "steps": plan.runbook.steps.iter()
                    .map(|s| (s.id.to_string(), s.description.clone().unwrap_or_default()))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            },
            "audit_log": s.audit_log.map(absolute),
            "plugins": plugins,
            "inputs": inputs,
            "backend": {
                "kind": if p.backend.is_simulation() { "simulation" } else { "live" },
                "path": backend_path,
                "sha256": file_digest(&backend_path),
                "incident_start": s.incident_start,
            },
            "sources": {
                "plugin_dirs": sources.plugin_dirs.iter().map(|d| absolute(d)).collect::<Vec<_>>(),
                "component_dirs": sources.component_dirs.iter().map(|d| absolute(d)).collect::<Vec<_>>(),
                "locked": sources.locked,
                "trust": sources.trust.as_ref().map(|t| absolute(&t.path)),
            },
            "policy": { "dry_run": s.approvals.dry_run, "yes": s.approvals.all, "approve": s.approvals.steps },
            "host_version": env!("CARGO_PKG_VERSION"),
            "started_ms": s.since_ms,
    });
    // Only when tracing is on: a journal without it reads as before.
    if let Some(trace) = s.trace {
        start["trace"] = trace.record();
    }
    // Only under policies: a journal without them reads as before. A
    // resumed run is asked of the policies in this directory then.
    if let Some(policies) = &sources.policies {
        start["sources"]["policies"] = json!({
            "dir": absolute(&policies.dir),
            "sha256": policies.digest,
        });
    }
    // Only when a step has a rule: a journal without it reads as before.
    let rules = crate::approvals::rules_of(&plan.runbook);
    if !rules.is_empty() {
        start["approval_rules"] = serde_json::to_value(&rules)?;
    }
    if let Some(severity) = &s.approvals.severity {
        start["severity"] = severity.clone().into();
    }
    start["starter"] = s
        .approvals
        .starter
        .clone()
        .unwrap_or_else(runbook_core::whoami::who)
        .into();
    journal.record("run-start", start)?;
    Ok(())
}
