//! `runbook run` and `runbook resume`: a request to the engine from the
//! flags, the timeline printed as each step ends, and the exit status.

use super::{emit, say};
use crate::cli::{ResumeArgs, RunArgs, StateArgs};
use crate::color::{HINT, WARN, paint, status_lines};
use anyhow::Result;
use runbook_core::error::hinted;
use runbook_core::exit::Exit;
use runbook_engine::report::{Status, StepReport};
use runbook_engine::runtime::{Runtime, default_cache_dir};
use runbook_engine::{Approvals, BackendChoice, Engine, Outcome, ResumeRequest, RunRequest, Watch};
use runbook_journal::local::LocalStore;
use runbook_journal::store::{Store, default_state_dir};
use std::sync::Arc;

/// The journal store `--nats` or `--state-dir` (or the default) names.
pub(super) fn store_for(state: &StateArgs) -> Result<Arc<dyn Store>> {
    Ok(store_and_fleet(state)?.0)
}

/// A store, and the fleet behind it when it is NATS.
pub(super) type StoreAndFleet = (Arc<dyn Store>, Option<Arc<runbook_fleet::nats::Fleet>>);

/// The store, and the fleet when it is NATS.
pub(super) fn store_and_fleet(state: &StateArgs) -> Result<StoreAndFleet> {
    store_and_fleet_with(state, None)
}

/// [`store_and_fleet`], with `replicas` copies of each NATS stream this
/// creates.
pub(super) fn store_and_fleet_with(
    state: &StateArgs,
    replicas: Option<usize>,
) -> Result<StoreAndFleet> {
    if let Some(url) = state
        .nats
        .clone()
        .or_else(|| std::env::var("RUNBOOK_NATS_URL").ok())
        .filter(|u| !u.trim().is_empty() && state.state_dir.is_none())
    {
        let fleet = runbook_fleet::nats::Fleet::connect(&url, replicas)?;
        let store = runbook_fleet::store::JetStreamStore::new(fleet);
        let fleet = store.fleet().clone();
        return Ok((store, Some(fleet)));
    }
    let dir = state.state_dir.clone().or_else(default_state_dir).ok_or_else(|| {
        hinted(
            "no state directory: neither `--state-dir`, `RUNBOOK_STATE_DIR`, `XDG_STATE_HOME` nor `HOME` is set",
            "pass `--state-dir DIR`",
        )
    })?;
    Ok((LocalStore::open(&dir)?, None))
}

/// Prints the timeline: the header, then each step as it ends (unless
/// the report is wanted as JSON at the end). Until the first step, a
/// terminal is shown what is being loaded.
struct Timeline {
    print: bool,
    loading: indicatif::ProgressBar,
}

impl Timeline {
    fn new(json: bool) -> Arc<Self> {
        Arc::new(Self {
            print: !json,
            loading: crate::progress::spinner("loading the runbook and its plugins"),
        })
    }
}

impl Watch for Timeline {
    fn started(&self, runbook_id: &str, title: &str, mode: &str, run_id: &str) -> Result<()> {
        self.loading.finish_and_clear();
        match self.print {
            true => emit(&runbook_engine::report::header(
                runbook_id, title, mode, run_id,
            )),
            false => Ok(()),
        }
    }

    fn step(&self, s: &StepReport) {
        if self.print {
            let _ = emit(&runbook_engine::report::render_step(s));
        }
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        self.loading.finish_and_clear();
    }
}

pub async fn run(args: RunArgs) -> Result<Exit> {
    // Tracing configuration that cannot be honoured stops the run before
    // anything (its journal included) is made.
    let tracing = super::traces::from_env().await?;
    let store = store_for(&args.state)?;
    let cache = (!args.no_cache)
        .then(|| args.cache_dir.clone().or_else(default_cache_dir))
        .flatten();
    let engine = Engine::new(Runtime::new(cache)?, Some(store)).with_tracing(tracing.clone());
    let request = RunRequest {
        runbook: args.runbook.clone(),
        backend: BackendChoice::from_flags(args.sim.as_deref(), args.env.as_deref())?,
        search: args.sources.search.to_engine(),
        locked: args.sources.locked,
        incident: args.incident.clone(),
        incident_start: args.incident_start.clone(),
        approvals: Approvals {
            all: args.yes,
            steps: args.approve.clone(),
            dry_run: args.dry_run,
            interactive: runbook_capabilities::approval::Approver::terminal(),
            starter: None,
            severity: args.severity.clone(),
        },
        audit_log: args.audit_log.clone(),
        new: args.new,
        trace: super::traces::origin_from_env(),
    };
    let outcome = engine.run(request, Timeline::new(args.json)).await;
    super::traces::shutdown(tracing).await;
    let outcome = outcome?;
    if let (Outcome::Ran(ran), Some(file)) = (&outcome, &args.markdown) {
        let text = runbook_engine::postmortem::markdown(&ran.report, &ran.postmortem);
        // The run is over either way: a file that cannot be written is
        // said, and the run's own exit status stands.
        if let Err(e) = std::fs::write(file, text) {
            eprintln!(
                "error: writing the Markdown timeline `{}`: {e}",
                file.display()
            );
            eprintln!(
                "hint: `runbook show {} --markdown` prints it again",
                ran.report.run_id
            );
        }
    }
    finish(&outcome, args.json)
}

pub async fn resume(args: ResumeArgs) -> Result<Exit> {
    let tracing = super::traces::from_env().await?;
    let store = store_for(&args.state)?;
    let engine =
        Engine::new(Runtime::new(default_cache_dir())?, Some(store)).with_tracing(tracing.clone());
    let request = ResumeRequest {
        run_id: args.run_id.clone(),
        approvals: Approvals {
            all: args.yes,
            steps: args.approve.clone(),
            dry_run: false,
            interactive: runbook_capabilities::approval::Approver::terminal(),
            starter: None,
            severity: None,
        },
        audit_log: args.audit_log.clone(),
        trace: super::traces::origin_from_env(),
    };
    let outcome = engine.resume(request, Timeline::new(args.json)).await;
    super::traces::shutdown(tracing).await;
    let outcome = outcome?;
    finish(&outcome, args.json)
}

/// Prints what became of the request and says its exit status.
fn finish(outcome: &Outcome, json: bool) -> Result<Exit> {
    let mut out = String::new();
    match outcome {
        Outcome::Blocked(err) => {
            anstream::eprintln!("{} {err}", paint(WARN, "blocked:"));
            if let Some(hint) = runbook_core::error::hint_of(err) {
                anstream::eprintln!("{} {hint}", paint(HINT, "hint:"));
            }
        }
        Outcome::Handled {
            incident,
            run_id,
            report,
        } => {
            say!(
                out,
                "incident `{incident}` was handled by run {run_id}; this is its report (start another with `--new`)"
            );
            out.push_str(&if json {
                serde_json::to_string_pretty(report)? + "\n"
            } else {
                report.render()
            });
        }
        Outcome::Finished { run_id, report } => {
            say!(out, "run {run_id} already finished; its report:");
            out.push_str(&report.render());
        }
        Outcome::Ran(ran) => {
            let report = &ran.report;
            if json {
                let mut doc = serde_json::to_value(report)?;
                if let Some(e) = &ran.expectation {
                    doc["expectation"] = serde_json::to_value(e)?;
                }
                say!(out, "{}", serde_json::to_string_pretty(&doc)?);
            } else {
                out.push_str(&report.footer());
                match &ran.expectation {
                    Some(e) if e.met => say!(out, "scenario: took the expected path"),
                    Some(e) => {
                        say!(out, "scenario: did not take the expected path:");
                        for d in &e.differences {
                            say!(out, "  {d}");
                        }
                    }
                    None => {}
                }
                if let Some(id) = &ran.foreign_step {
                    say!(
                        out,
                        "scenario: its `[expect]` is for another runbook (it names step `{id}`, which this one lacks)"
                    );
                }
            }
        }
    }
    emit(&status_lines(&out))?;
    if let Outcome::Ran(ran) = outcome
        && ran.expectation.as_ref().is_none_or(|e| e.met)
        && let (Status::Blocked, Some(reason)) = (ran.report.status, &ran.report.reason)
    {
        // Also where scripts and `--json` callers look.
        anstream::eprintln!("{} {reason}", paint(WARN, "blocked:"));
        anstream::eprintln!(
            "{} `runbook show` on the other run says what it did; if this runbook still needs to run, start it again with `--new`: it reads everything afresh",
            paint(HINT, "hint:")
        );
    }
    Ok(outcome.exit())
}
