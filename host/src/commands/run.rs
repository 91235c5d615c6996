//! `runbook run`: load and check everything, pick the backends, execute,
//! print the report.

use super::{emit, say, sources};
use crate::approval::{Approver, Policy};
use crate::audit::AuditLog;
use crate::capability::Backends;
use crate::cli::RunArgs;
use crate::engine::{Runtime, default_cache_dir};
use crate::environment::Environment;
use crate::error::hinted;
use crate::exit::Exit;
use crate::plan::Plan;
use crate::run::{RunConfig, execute};
use crate::runbook::Runbook;
use crate::scenario::{Expect, Scenario};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What stands behind the capabilities in this run.
pub enum Backend {
    /// `--sim SCENARIO`.
    Sim { scenario: Scenario, path: PathBuf },
    /// `--env FILE`.
    Live {
        env: Environment,
        incident_start_ms: Option<u64>,
    },
}

impl Backend {
    pub fn from_args(args: &RunArgs) -> Result<Self> {
        match (&args.sim, &args.env) {
            (Some(path), _) => Ok(Backend::Sim {
                scenario: Scenario::load(path)?,
                path: path.clone(),
            }),
            (None, Some(path)) => Ok(Backend::Live {
                env: Environment::load(path)?,
                incident_start_ms: args
                    .incident_start
                    .as_deref()
                    .map(parse_incident_start)
                    .transpose()?,
            }),
            (None, None) => Err(hinted(
                "no backend chosen for the run",
                "pass `--sim SCENARIO` to run against simulated backends (e.g. `runbooks/scenarios/session-store-outage.toml`), or `--env FILE` for real ones",
            )),
        }
    }

    /// Every resource the plan's grants name is provided.
    pub fn check(&self, plan: &Plan) -> Result<()> {
        match self {
            Backend::Sim { scenario, path } => scenario.check_plan(plan, path),
            Backend::Live { env, .. } => env.check_plan(plan),
        }
    }

    pub fn mode(&self) -> String {
        match self {
            Backend::Sim { path, .. } => format!(
                "simulation `{}`",
                path.file_stem().unwrap_or_default().to_string_lossy()
            ),
            Backend::Live { env, .. } => format!("live `{}`", env.path.display()),
        }
    }

    pub fn is_simulation(&self) -> bool {
        matches!(self, Backend::Sim { .. })
    }

    pub fn expect(&self) -> Option<&Expect> {
        match self {
            Backend::Sim { scenario, .. } => scenario.expect.as_ref(),
            Backend::Live { .. } => None,
        }
    }

    pub async fn backends(&self, plan: &Plan) -> Result<Backends> {
        match self {
            Backend::Sim { scenario, path } => scenario.backends().map_err(|why| {
                hinted(
                    format!("invalid scenario `{}`: {why}", path.display()),
                    "see runbooks/README.md for the scenario format",
                )
            }),
            Backend::Live {
                env,
                incident_start_ms,
            } => env.backends(&plan.interfaces(), *incident_start_ms).await,
        }
    }
}

fn parse_incident_start(t: &str) -> Result<u64> {
    crate::time::Timestamp::parse(t).map(|t| t.0).map_err(|e| {
        hinted(
            format!("`--incident-start`: {e}"),
            "write it like `2026-11-26T02:52:00Z`",
        )
    })
}

pub async fn run(args: RunArgs) -> Result<Exit> {
    let runbook = Runbook::load(&args.runbook)?;
    for step in &args.approve {
        if runbook.step(step).is_none() {
            return Err(hinted(
                format!(
                    "`--approve {step}`: runbook `{}` has no step `{step}`",
                    args.runbook.display()
                ),
                "name a step id from the runbook's `steps`",
            ));
        }
    }
    let backend = Backend::from_args(&args)?;
    // Cache entries are verified against the digest of the (pinned) bytes
    // before they are loaded, so locked runs may use them too.
    let cache = if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(default_cache_dir)
    };
    let runtime = Runtime::new(cache)?;
    let audit = args
        .audit_log
        .as_deref()
        .map(AuditLog::open)
        .transpose()?
        .map(Arc::new);
    let run_id = run_id();
    let loaded = Plan::load(&runtime, runbook, &sources(&args.sources, &args.runbook))
        .and_then(|plan| backend.check(&plan).map(|()| plan));
    let plan = match loaded {
        Ok(plan) => Arc::new(plan),
        Err(err) => {
            // A refusal before any step ran is a security decision too.
            refused(audit.as_deref(), &run_id, &args.runbook, &err);
            return Err(err);
        }
    };
    plan.prefetch(&runtime);
    let policy = if args.dry_run {
        Policy::DryRun
    } else if args.yes {
        Policy::All
    } else {
        Policy::Steps(args.approve.iter().cloned().collect())
    };
    let mode = match args.dry_run {
        true => format!("{}, dry run", backend.mode()),
        false => backend.mode(),
    };
    let cfg = RunConfig {
        run_id,
        mode,
        backends: backend.backends(&plan).await?,
        audit,
        approver: Arc::new(Approver::new(
            policy,
            backend.is_simulation(),
            Approver::terminal(),
        )),
    };
    let report = execute(&plan, &runtime, &cfg).await;
    let mut out = String::new();
    if args.json {
        say!(out, "{}", serde_json::to_string_pretty(&report)?);
    } else {
        out.push_str(&report.render());
        if let Some(e) = backend.expect().filter(|_| !args.dry_run) {
            let status = serde_json::to_value(report.status)?;
            if report.path() == e.path && status == e.status.as_str() {
                say!(out, "scenario: took the expected path");
            } else {
                say!(
                    out,
                    "scenario: expected `{}` via {}, got this run",
                    e.status,
                    e.path.join(" → ")
                );
            }
        }
    }
    emit(&out)?;
    Ok(report.status.exit())
}

fn refused(audit: Option<&AuditLog>, run_id: &str, runbook: &Path, err: &anyhow::Error) {
    if let Some(audit) = audit {
        audit.event(
            run_id,
            "refused",
            serde_json::json!({
                "runbook": runbook.display().to_string(),
                "reason": format!("{err:#}"),
            }),
        );
    }
}

/// A fresh run id: 48 random bits, in hex.
pub fn run_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let seed = RandomState::new().hash_one((std::process::id(), crate::time::now_ms()));
    format!("{:012x}", seed & 0xffff_ffff_ffff)
}
