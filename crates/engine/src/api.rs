//! The one way in. [`Engine::run`] and [`Engine::resume`] are what
//! `runbook run` and `runbook resume` and the fleet's workers call alike;
//! `runbook test`, `step` and `bench` run a checked plan with no journal
//! through [`Engine::prepare`] (or [`Engine::plan`]) and
//! [`Engine::run_prepared`]. A request is a typed value; nothing builds a
//! command line to call itself.
//!
//! A run: the runbook and plan are loaded and checked, the incident's
//! last run is looked at (an ended one is shown, not run again), the run's
//! journal is opened in the store (refused while another run of the
//! incident is unfinished) and its first line written, then the plan runs,
//! each step told to the [`Watch`] as it ends.

use crate::backend::{Backend, BackendChoice};
use crate::plan::Plan;
use crate::rebuild::report_of;
use crate::report::{Report, Status};
use crate::request::{Approvals, Outcome, Ran, ResumeRequest, RunRequest, Watch};
use crate::run::execute;
use crate::run_config::{OnStep, RunConfig};
use crate::runtime::Runtime;
use crate::sources::Sources;
use crate::start::{Prepared, Started, file_digest, prepare, record_start, run_id};
use crate::telemetry::{RunIdentity, RunTrace, Tracing};
use crate::{expect, postmortem};
use anyhow::{Context, Result};
use runbook_capabilities::approval::Approver;
use runbook_capabilities::durable::{Budget, Durable};
use runbook_core::error::hinted;
use runbook_core::runbook::Runbook;
use runbook_core::signing::Trust;
use runbook_core::trace::{TraceOrigin, TraceParent};
use runbook_journal::holder::{Held, Holder};
use runbook_journal::replay::{Replay, default_incident, own_changes};
use runbook_journal::store::Store;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Runs runbooks: one wasmtime runtime (compiled components, instance
/// templates, the pool) and the store journals live in.
#[derive(Clone)]
pub struct Engine {
    runtime: Arc<Runtime>,
    store: Option<Arc<dyn Store>>,
    /// Where runs' spans go; `None`: no tracing, no cost.
    tracing: Option<Arc<Tracing>>,
}

impl Engine {
    /// Runs journaled in `store`; `None`: no journal (rehearsals, benches).
    pub fn new(runtime: Arc<Runtime>, store: Option<Arc<dyn Store>>) -> Self {
        Self {
            runtime,
            store,
            tracing: None,
        }
    }

    /// Each run traced to `tracing` (when `Some`).
    pub fn with_tracing(mut self, tracing: Option<Arc<Tracing>>) -> Self {
        self.tracing = tracing;
        self
    }

    /// A run's span, when tracing is on.
    fn trace(
        &self,
        origin: &TraceOrigin,
        continues: Option<TraceParent>,
        run: RunIdentity<'_>,
    ) -> Option<RunTrace> {
        self.tracing
            .as_ref()
            .map(|t| t.start_run(origin, continues, run))
    }

    /// Loads and checks everything a simulated run of `runbook` against
    /// `scenario` needs, with no journal and nothing run: what `bench` then
    /// runs many times ([`Engine::run_prepared`]).
    pub fn prepare(&self, runbook: &Path, scenario: &Path, sources: &Sources) -> Result<Prepared> {
        let runbook = Runbook::load(runbook)?;
        let backend = Backend::load(&BackendChoice::Sim(scenario.to_path_buf()), None)?;
        let plan = self.plan(runbook, sources)?;
        let mut prepared = Prepared::new(Arc::new(plan), backend)?;
        prepared.policies = sources.policies.clone();
        Ok(prepared)
    }

    /// One simulated run of a prepared plan with no journal, every change
    /// approved (`runbook test`, `step`, `bench`): each run gets fresh
    /// backends (a new simulated world). A prepared plan against live
    /// backends is refused: changes to real systems are journaled and
    /// approved, which only [`Engine::run`] does.
    pub async fn run_prepared(&self, p: &Prepared, run_id: &str) -> Result<Report> {
        anyhow::ensure!(
            p.backend.is_simulation(),
            "a run against live backends needs a journal and approvals: use `runbook run --env`"
        );
        let mode = p.backend.mode();
        let trace = self.trace(
            &TraceOrigin::default(),
            None,
            RunIdentity {
                runbook_id: &p.plan.runbook.runbook_id,
                title: &p.plan.runbook.title,
                run_id,
                incident: run_id,
                mode: &mode,
            },
        );
        // Policies (`bench --policies`) are asked as in a run: what they
        // cost is this with and without them.
        let guard = p.policies.as_ref().map(|policies| {
            Arc::new(crate::guard::of_run(
                policies,
                &p.plan,
                (run_id, run_id, &mode, p.backend.incident_start_ms()),
                &Approvals::default(),
                &[],
                None,
            ))
        });
        let cfg = RunConfig {
            budget: Budget::new(p.plan.runbook.max_mutations, 0),
            trace,
            guard,
            ..RunConfig::simple(
                run_id,
                &p.backend.mode(),
                p.backend.backends(&p.plan).await?,
                Arc::new(Approver::new(
                    runbook_core::approval::Policy::All,
                    true,
                    false,
                )),
            )
        };
        let report = execute(&p.plan, &self.runtime, &cfg).await;
        if let Some(t) = &cfg.trace {
            t.end(&report);
        }
        Ok(report)
    }

    /// A plan for `runbook` (a runbook made in memory, e.g. one step of
    /// `runbook step`), checked against the lock when `sources.locked`.
    pub fn plan(&self, runbook: Runbook, sources: &Sources) -> Result<Plan> {
        crate::start::load_plan(&self.runtime, runbook, sources)
    }

    /// Runs a runbook for an incident.
    pub async fn run(&self, req: RunRequest, watch: Arc<dyn Watch>) -> Result<Outcome> {
        let runbook = Runbook::load(&req.runbook)?;
        for step in &req.approvals.steps {
            if runbook.step(step).is_none() {
                return Err(hinted(
                    format!(
                        "`--approve {step}`: runbook `{}` has no step `{step}`",
                        req.runbook.display()
                    ),
                    "name a step id from the runbook's `steps`",
                ));
            }
        }
        let backend = Backend::load(&req.backend, req.incident_start.as_deref())?;
        let run_id = run_id();
        let mut sources = Sources::find(&req.search, Some(&req.runbook))?;
        sources.locked = req.locked;
        let p = prepare(
            &self.runtime,
            &req.runbook,
            backend,
            &sources,
            req.audit_log.as_deref(),
            &run_id,
        )?;
        let incident = match (&req.incident, &p.backend) {
            (Some(i), _) => i.clone(),
            // A simulation is an incident of its own: rehearsals never block.
            (None, Backend::Sim { .. }) => format!("simulation:{run_id}"),
            (None, Backend::Live { env, .. }) => default_incident(
                &p.plan.runbook.runbook_id,
                &env.path.file_stem().unwrap_or_default().to_string_lossy(),
                req.incident_start.as_deref(),
            ),
        };
        let mode = match req.approvals.dry_run {
            true => format!("{}, dry run", p.backend.mode()),
            false => p.backend.mode(),
        };
        // The organisation's policies: may whoever starts it run it?
        if let Some(policies) = &p.policies {
            crate::guard::may_start(
                policies,
                &p.plan,
                (&run_id, &incident, &mode, p.backend.incident_start_ms()),
                &req.approvals,
            )?;
        }
        let store = self
            .store
            .clone()
            .context("a run needs a store for its journal")?;
        // The incident's last run finished: show it, unless a new one is asked for.
        if !req.new
            && let Some(last) = store.incident_runs(&incident)?.last()
            && let Some(report) =
                report_of(&*store, last)?.filter(|r| r.status != Status::Unfinished)
        {
            return Ok(Outcome::Handled {
                incident,
                run_id: last.clone(),
                report,
            });
        }
        let holder = Holder::me(&run_id);
        let journal = match store.start_run(&incident, &holder) {
            Ok(j) => Arc::new(j),
            Err(err) if is_blocked(&err) => return Ok(Outcome::Blocked(err)),
            Err(err) => return Err(err),
        };
        // Before any step reads anything.
        let since_ms = runbook_core::time::now_ms();
        let trace = self.trace(
            &req.trace,
            None,
            RunIdentity {
                runbook_id: &p.plan.runbook.runbook_id,
                title: &p.plan.runbook.title,
                run_id: &run_id,
                incident: &incident,
                mode: &mode,
            },
        );
        // Nothing runs that the journal does not have.
        record_start(
            &journal,
            &p,
            &Started {
                runbook_path: &req.runbook,
                incident: &incident,
                incident_start: req.incident_start.as_deref(),
                audit_log: req.audit_log.as_deref(),
                sources: &sources,
                approvals: &req.approvals,
                holder: &holder,
                since_ms,
                trace: trace.as_ref(),
            },
        )
        .context("the run was not started")?;
        let durable = Durable {
            identities: p.backend.identities(),
            // Started just now: nothing of its own applied yet.
            own_changes: own_changes(&*store, &incident, Some(&run_id))?.into(),
            journal,
            store,
            replay: Arc::new(Replay::default()),
            holder,
            leases: !p.backend.is_simulation(),
            since_ms,
            runbook: p.plan.runbook.runbook_id.clone(),
            incident: incident.clone(),
        };
        let postmortem = postmortem::Context {
            descriptions: p
                .plan
                .runbook
                .steps
                .iter()
                .map(|s| (s.id.to_string(), s.description.clone().unwrap_or_default()))
                .collect(),
            service: p.plan.runbook.service.clone(),
            incident: incident.clone(),
            audit_log: req.audit_log.as_ref().map(|a| a.display().to_string()),
            journal: Some(durable.journal.location()),
        };
        let report = self
            .execute(
                &p,
                (run_id, incident, mode),
                (&req.approvals, &[]),
                Some(durable),
                watch,
                trace,
            )
            .await?;
        Ok(Outcome::Ran(Box::new(ran(
            &p,
            report,
            postmortem,
            req.approvals.dry_run,
        ))))
    }

    /// Continues a run that crashed, was stopped, or waits for an
    /// approval, from its journal: what runs now must be what ran then.
    pub async fn resume(&self, req: ResumeRequest, watch: Arc<dyn Watch>) -> Result<Outcome> {
        let store = self
            .store
            .clone()
            .context("resuming a run needs the store its journal is in")?;
        let run_id = req.run_id.as_str();
        let lines = store.read_run(run_id)?;
        let start = lines
            .iter()
            .find(|l| l["event"] == "run-start")
            .ok_or_else(|| {
                hinted(
                    format!(
                        "run `{run_id}` cannot be resumed: its journal has no whole `run-start` (it crashed while writing it, and nothing ran, or the journal was altered)"
                    ),
                    format!(
                        "start the incident's run again with `runbook run`; `runbook verify-log` on its journal says whether it was altered, `runbook show {run_id}` what is there"
                    ),
                )
            })?
            .clone();
        if let Some(report) = report_of(&*store, run_id)?.filter(|r| {
            // A run that stopped for an approval goes on from that step.
            !matches!(
                r.status,
                Status::Unfinished | Status::AwaitingApproval | Status::Halted
            )
        }) {
            return Ok(Outcome::Finished {
                run_id: run_id.to_string(),
                report,
            });
        }
        // A dry run changed nothing; resuming it would (a resume is
        // never a dry run).
        if start["policy"]["dry_run"] == true {
            return Err(hinted(
                format!("run `{run_id}` was a dry run: it is not resumed"),
                "start the run again (without `--dry-run` to make its changes)",
            ));
        }
        let journal = match store.reopen_run(run_id) {
            Ok(j) => Arc::new(j),
            Err(err) if is_blocked(&err) => return Ok(Outcome::Blocked(err)),
            Err(err) => return Err(err),
        };
        let path = |v: &Value| PathBuf::from(v.as_str().unwrap_or_default());
        let runbook_path = path(&start["runbook"]["path"]);
        let backend_path = path(&start["backend"]["path"]);
        let simulation = start["backend"]["kind"] == "simulation";
        let choice = match simulation {
            true => BackendChoice::Sim(backend_path),
            false => BackendChoice::Live(backend_path),
        };
        let backend = Backend::load(&choice, start["backend"]["incident_start"].as_str())
            .context("loading the run's backend again")?;
        // The trust file the run started under still decides; one that
        // went missing since is an error, not a reason to skip the check.
        let trust = match start["sources"]["trust"].as_str() {
            Some(t) => Some(Arc::new(Trust::load(Path::new(t))?)),
            None => None,
        };
        let sources = Sources {
            plugin_dirs: start["sources"]["plugin_dirs"]
                .as_array()
                .map(|a| a.iter().map(path).collect())
                .unwrap_or_default(),
            component_dirs: start["sources"]["component_dirs"]
                .as_array()
                .map(|a| a.iter().map(path).collect())
                .unwrap_or_default(),
            locked: start["sources"]["locked"].as_bool().unwrap_or(false),
            // So do its policies, as they are now (a security team's
            // change since applies); a directory gone is an error.
            policies: match start["sources"]["policies"]["dir"].as_str() {
                Some(d) => Some(
                    crate::sources::load_policies(Path::new(d), trust.as_deref())
                        .context("the run started under this policy directory")?,
                ),
                None => None,
            },
            trust,
        };
        let p = prepare(
            &self.runtime,
            &runbook_path,
            backend,
            &sources,
            req.audit_log.as_deref(),
            run_id,
        )?;
        // The organisation's policies: may whoever continues it resume it?
        if let Some(policies) = &p.policies {
            crate::guard::may_resume(policies, &start, run_id, &req.approvals)?;
        }
        // What runs now must be what ran then.
        let changed = |what: &str, now: &str, then: &Value| {
            (then.as_str() != Some(now)).then(|| {
                hinted(
                    format!("run `{run_id}` cannot be resumed: {what} changed since it started"),
                    "start a new run of the incident with `runbook run ... --new` (see what the old one did with `runbook show`)",
                )
            })
        };
        if let Some(e) = changed(
            &format!("runbook `{}`", runbook_path.display()),
            &file_digest(&runbook_path),
            &start["runbook"]["sha256"],
        ) {
            return Err(e);
        }
        for s in &p.plan.steps {
            if let Some(e) = changed(
                &format!("plugin `{}`", s.plugin.name()),
                &s.plugin.digest,
                &start["plugins"][s.plugin.name()]["sha256"],
            ) {
                return Err(e);
            }
        }
        let holder = Holder::me(run_id);
        let approvals = Approvals {
            dry_run: false,
            ..req.approvals
        };
        // Read again now the run is this process's (reopening it checked
        // the chain and cut off a torn last line).
        let lines = store.read_run(run_id)?;
        // The torn line was its `run-start`: the run never started.
        if lines.first().map(|l| &l["event"]) != Some(&json!("run-start")) {
            return Err(hinted(
                format!(
                    "run `{run_id}` cannot be resumed: its journal has no whole `run-start` (it crashed while writing it, and nothing ran)"
                ),
                "start the incident's run again with `runbook run`",
            ));
        }
        let torn = journal.torn.as_ref().map(|t| {
            let text = String::from_utf8_lossy(t);
            text.chars().take(4096).collect::<String>()
        });
        if let Some(t) = &torn {
            eprintln!(
                "note: the journal's last line was torn (a write that never finished: {} bytes); it was cut off and nothing was done on its account",
                t.len()
            );
        }
        let incident = start["incident"].as_str().unwrap_or_default().to_string();
        let mode = format!("{}, resumed", p.backend.mode());
        // Under the run's first span, in its trace, when it had one.
        let trace = self.trace(
            &req.trace,
            journaled_trace(&start),
            RunIdentity {
                runbook_id: &p.plan.runbook.runbook_id,
                title: &p.plan.runbook.title,
                run_id,
                incident: &incident,
                mode: &mode,
            },
        );
        let mut resumed = json!({ "holder": holder, "policy": { "yes": approvals.all, "approve": approvals.steps }, "dropped_torn_line": torn });
        if let Some(t) = &trace {
            resumed["trace"] = t.record();
        }
        journal
            .record("resume", resumed)
            .context("the run was not resumed")?;
        // A run a halt stopped, continued (by `resume-all` or by hand):
        // off the halt's list (a halt still in force lists it again when
        // it stops it again).
        if runbook_journal::replay::finished(&lines).is_some_and(|e| e["status"] == "halted") {
            runbook_journal::halt::unlist(&*store, run_id)
                .context("taking the run off the halt's list of stopped runs")?;
        }
        let durable = Durable {
            identities: p.backend.identities(),
            own_changes: own_changes(&*store, &incident, None)?.into(),
            journal,
            store,
            replay: Arc::new(Replay::from_journal(&lines)),
            holder,
            leases: !simulation,
            // Journals from before `started_ms` was written: now.
            since_ms: start["started_ms"]
                .as_u64()
                .unwrap_or_else(runbook_core::time::now_ms),
            runbook: p.plan.runbook.runbook_id.clone(),
            incident: incident.clone(),
        };
        let postmortem =
            postmortem::Context::from_run_start(&start, Some(durable.journal.location()));
        let report = self
            .execute(
                &p,
                (run_id.to_string(), incident, mode),
                (&approvals, &lines),
                Some(durable),
                watch,
                trace,
            )
            .await?;
        Ok(Outcome::Ran(Box::new(ran(&p, report, postmortem, false))))
    }

    /// Executes the plan, telling `watch` the header first and each step
    /// as it ends.
    async fn execute(
        &self,
        p: &Prepared,
        (run_id, incident, mode): (String, String, String),
        (approvals, journaled): (&Approvals, &[Value]),
        durable: Option<Durable>,
        watch: Arc<dyn Watch>,
        trace: Option<RunTrace>,
    ) -> Result<Report> {
        watch.started(
            &p.plan.runbook.runbook_id,
            &p.plan.runbook.title,
            &mode,
            &run_id,
        )?;
        let used = durable.as_ref().map_or(0, |d| d.replay.applied);
        let on_step: OnStep = Box::new(move |s| watch.step(s));
        let guard = p.policies.as_ref().map(|policies| {
            Arc::new(crate::guard::of_run(
                policies,
                &p.plan,
                (&run_id, &incident, &mode, p.backend.incident_start_ms()),
                approvals,
                journaled,
                // Changes are counted where the run's journal is: with
                // every run that shares it.
                durable.as_ref().map(|d| d.store.clone()),
            ))
        });
        let cfg = RunConfig {
            run_id,
            incident,
            mode,
            backends: p.backend.backends(&p.plan).await?,
            audit: p.audit.clone(),
            // Steps under an approval rule are decided by the decisions
            // in the journal (of a resumed run), not by flags.
            approver: Arc::new(
                Approver::new(
                    approvals.policy(),
                    p.backend.is_simulation(),
                    approvals.interactive,
                )
                .with_gates(crate::approvals::gates(
                    &runbook_journal::approvals::with_policies(
                        crate::approvals::rules_of(&p.plan.runbook),
                        journaled,
                    ),
                    journaled,
                    runbook_core::time::now_ms(),
                )),
            ),
            guard,
            durable,
            budget: Budget::new(p.plan.runbook.max_mutations, used),
            on_step: Some(on_step),
            trace,
        };
        // A panic in the host (a bug, or a backend's answer no code
        // expected) ends this run, not the process: the journal says so,
        // and the run stays resumable (a change in doubt is checked first).
        let run = std::panic::AssertUnwindSafe(execute(&p.plan, &self.runtime, &cfg));
        let report = match futures_util::FutureExt::catch_unwind(run).await {
            Ok(report) => report,
            Err(panic) => self.panicked(p, &cfg, panic),
        };
        if let Some(t) = &cfg.trace {
            t.end(&report);
        }
        Ok(report)
    }

    /// The report of a run the host panicked in: what the journal has,
    /// stopped, with the panic as its reason.
    fn panicked(
        &self,
        p: &Prepared,
        cfg: &RunConfig,
        panic: Box<dyn std::any::Any + Send>,
    ) -> Report {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let recorded = match &cfg.durable {
            Some(d) => d
                .journal
                .record("host-panic", json!({ "message": message }))
                .map(|_| ())
                .map_err(|e| format!("; it could not be journaled: {e:#}")),
            None => Ok(()),
        };
        let mut report = self
            .store
            .as_ref()
            .filter(|_| cfg.durable.is_some())
            .and_then(|s| report_of(&**s, &cfg.run_id).ok().flatten())
            .unwrap_or_else(|| Report {
                runbook_id: p.plan.runbook.runbook_id.clone(),
                title: p.plan.runbook.title.clone(),
                run_id: cfg.run_id.clone(),
                mode: cfg.mode.clone(),
                status: Status::Failed,
                reason: None,
                started_at: String::new(),
                finished_at: String::new(),
                elapsed_ms: 0,
                wall_ms: 0,
                steps: Vec::new(),
                escalation: p.plan.runbook.escalation.clone(),
                mutations: crate::report::Mutations {
                    used: cfg.budget.used(),
                    allowed: cfg.budget.allowed,
                },
                end_recorded: false,
                trace_id: None,
            });
        report.trace_id = cfg.trace.as_ref().map(|t| t.trace_id());
        report.status = Status::Failed;
        // Continued from its journal: never taken as ended.
        report.end_recorded = false;
        report.reason = Some(format!(
            "the host panicked: {message}{}; the run stopped (please report this); `runbook resume {}` continues it, checking any change in doubt first",
            recorded.err().unwrap_or_default(),
            cfg.run_id
        ));
        report
    }
}

/// A run that went, compared with its scenario's `[expect]`.
fn ran(p: &Prepared, report: Report, postmortem: postmortem::Context, dry_run: bool) -> Ran {
    // A scenario's `[expect]` is about the runbook it was written for: one
    // that names steps this runbook lacks is said, not held against it
    // (`runbook test` holds it).
    // Nor is a run a halt stopped held against it: it did not end.
    let (expectation, foreign_step) = if dry_run || report.status == Status::Halted {
        (None, None)
    } else {
        expectation(p, &report)
    };
    Ran {
        report,
        expectation,
        foreign_step,
        postmortem,
    }
}

/// How `report` compared with its scenario's `[expect]`, when the
/// scenario has one about this runbook; else the step it names that this
/// runbook lacks, if any.
pub(crate) fn expectation(
    p: &Prepared,
    report: &Report,
) -> (Option<expect::Expectation>, Option<String>) {
    let expect = p.backend.expect();
    let foreign_step = expect.and_then(|e| {
        e.steps()
            .find(|id| p.plan.runbook.step(id).is_none())
            .map(str::to_string)
    });
    let expectation = expect
        .filter(|_| foreign_step.is_none())
        .map(|e| expect::check(e, report));
    (expectation, foreign_step)
}

/// The run span a run's `run-start` recorded: a resumed run continues
/// its trace under it.
fn journaled_trace(start: &Value) -> Option<TraceParent> {
    let t = &start["trace"];
    format!(
        "00-{}-{}-{}",
        t["trace_id"].as_str()?,
        t["span_id"].as_str()?,
        if t["sampled"] == json!(false) {
            "00"
        } else {
            "01"
        }
    )
    .parse()
    .ok()
}

/// A refusal because another run holds the incident or the run.
fn is_blocked(err: &anyhow::Error) -> bool {
    Held::in_chain(err) || err.to_string().contains("has an unfinished run")
}
