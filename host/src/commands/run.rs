//! `runbook run` and `runbook resume`: load and check everything, pick the
//! backends, open (or reopen) the run's journal, execute, print the
//! timeline as each step ends.

use super::{emit, say, sources};
use crate::approval::{Approver, Policy};
use crate::audit::AuditLog;
use crate::capability::Backends;
use crate::capability::gate::{Budget, Durable};
use crate::cli::{ResumeArgs, RunArgs, StateArgs};
use crate::engine::{Runtime, default_cache_dir};
use crate::environment::Environment;
use crate::error::hinted;
use crate::exit::Exit;
use crate::journal::{Held, Holder, Journal, LocalStore, Replay, Store};
use crate::plan::{self, Plan};
use crate::report::{Report, Status, StepReport};
use crate::run::{OnStep, RunConfig, execute};
use crate::runbook::Runbook;
use crate::scenario::{Expect, Scenario};
use anyhow::{Context, Result};
use serde_json::{Value, json};
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
    fn load(sim: Option<&Path>, env: Option<&Path>, incident_start: Option<&str>) -> Result<Self> {
        match (sim, env) {
            (Some(path), _) => Ok(Backend::Sim {
                scenario: Scenario::load(path)?,
                path: path.to_path_buf(),
            }),
            (None, Some(path)) => Ok(Backend::Live {
                env: Environment::load(path)?,
                incident_start_ms: incident_start.map(parse_incident_start).transpose()?,
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

    /// The live environment (leases name what it maps resources to).
    fn environment(&self) -> Option<Arc<Environment>> {
        match self {
            Backend::Live { env, .. } => Some(Arc::new(env.clone())),
            Backend::Sim { .. } => None,
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

    fn path(&self) -> &Path {
        match self {
            Backend::Sim { path, .. } => path,
            Backend::Live { env, .. } => &env.path,
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

/// The journal store `--nats` or `--state-dir` (or the default) names.
pub fn store_for(state: &StateArgs) -> Result<Arc<dyn Store>> {
    if let Some(url) = state
        .nats
        .clone()
        .or_else(|| std::env::var("RUNBOOK_NATS_URL").ok())
        .filter(|u| !u.trim().is_empty() && state.state_dir.is_none())
    {
        let fleet = crate::fleet::nats::Fleet::connect(&url, None)?;
        return Ok(crate::fleet::store::JetStreamStore::new(fleet));
    }
    let dir = state
        .state_dir
        .clone()
        .or_else(crate::journal::default_state_dir)
        .ok_or_else(|| {
            hinted(
                "no state directory: neither `--state-dir`, `RUNBOOK_STATE_DIR`, `XDG_STATE_HOME` nor `HOME` is set",
                "pass `--state-dir DIR`",
            )
        })?;
    Ok(LocalStore::open(&dir)?)
}

/// Where a run keeps its journal and whom it talks to: the CLI's (the
/// store its flags name, the terminal) or a worker's.
pub struct RunContext {
    pub store: Arc<dyn Store>,
    /// One engine for many runs (a worker); else one per run.
    pub runtime: Option<Arc<Runtime>>,
    /// Print nothing and ask nobody (a worker logs instead).
    pub quiet: bool,
}

impl RunContext {
    fn cli(state: &StateArgs) -> Result<Self> {
        Ok(Self {
            store: store_for(state)?,
            runtime: None,
            quiet: false,
        })
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn file_digest(p: &Path) -> String {
    crate::files::read_bytes(p, "file", crate::files::MAX_TEXT)
        .map(|b| crate::engine::sha256_hex(&b))
        .unwrap_or_default()
}

/// A refusal because another run holds the incident or a resource:
/// printed, exit 5.
fn blocked(err: &anyhow::Error) -> Option<Exit> {
    let held = err.chain().any(|e| e.downcast_ref::<Held>().is_some());
    let unfinished = err.to_string().contains("has an unfinished run");
    if !(held || unfinished) {
        return None;
    }
    eprintln!("blocked: {err}");
    if let Some(hint) = crate::error::hint_of(err) {
        eprintln!("hint: {hint}");
    }
    Some(Exit::Blocked)
}

/// Everything a run (or a resumed one) is made of.
struct Prepared {
    runtime: Arc<Runtime>,
    plan: Arc<Plan>,
    backend: Backend,
    audit: Option<Arc<AuditLog>>,
    quiet: bool,
}

fn prepare(
    runbook_path: &Path,
    backend: Backend,
    sources: &plan::Sources,
    cache: Option<PathBuf>,
    audit_log: Option<&Path>,
    run_id: &str,
    ctx: &RunContext,
) -> Result<Prepared> {
    let runbook = Runbook::load(runbook_path)?;
    let runtime = match &ctx.runtime {
        Some(r) => r.clone(),
        None => Runtime::new(cache)?,
    };
    let audit = audit_log.map(AuditLog::open).transpose()?.map(Arc::new);
    let loaded =
        Plan::load(&runtime, runbook, sources).and_then(|plan| backend.check(&plan).map(|()| plan));
    let plan = match loaded {
        Ok(plan) => Arc::new(plan),
        Err(err) => {
            // A refusal before any step ran is a security decision too.
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
    plan.prefetch(&runtime);
    Ok(Prepared {
        runtime,
        plan,
        backend,
        audit,
        quiet: ctx.quiet,
    })
}

pub async fn run(args: RunArgs) -> Result<Exit> {
    let ctx = RunContext::cli(&args.state)?;
    run_in(args, &ctx).await
}

/// A run, its journal in `ctx`'s store.
pub async fn run_in(args: RunArgs, ctx: &RunContext) -> Result<Exit> {
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
    let backend = Backend::load(
        args.sim.as_deref(),
        args.env.as_deref(),
        args.incident_start.as_deref(),
    )?;
    let run_id = run_id();
    let cache = (!args.no_cache)
        .then(|| args.cache_dir.clone().or_else(default_cache_dir))
        .flatten();
    let sources = sources(&args.sources, &args.runbook)?;
    let p = prepare(
        &args.runbook,
        backend,
        &sources,
        cache,
        args.audit_log.as_deref(),
        &run_id,
        ctx,
    )?;
    let store = ctx.store.clone();
    let incident = match (&args.incident, &p.backend) {
        (Some(i), _) => i.clone(),
        // A simulation is an incident of its own: rehearsals never block.
        (None, Backend::Sim { .. }) => format!("simulation:{run_id}"),
        (None, Backend::Live { env, .. }) => crate::journal::default_incident(
            &p.plan.runbook.runbook_id,
            &env.path.file_stem().unwrap_or_default().to_string_lossy(),
            args.incident_start.as_deref(),
        ),
    };
    // The incident's last run finished: show it, unless a new one is asked for.
    if !args.new
        && let Some(last) = store.incident_runs(&incident)?.last()
        && let Some(report) = crate::commands::journal::report_of(&*store, last)?
            .filter(|r| r.status != crate::report::Status::Unfinished)
    {
        let mut out = format!(
            "incident `{incident}` was handled by run {last}; this is its report (start another with `--new`)\n"
        );
        out.push_str(&if args.json {
            serde_json::to_string_pretty(&report)? + "\n"
        } else {
            report.render()
        });
        if !ctx.quiet {
            emit(&out)?;
        }
        return Ok(report.status.exit());
    }
    let holder = Holder::me(&run_id);
    let journal = match store.start_run(&incident, &holder) {
        Ok(j) => Arc::new(j),
        Err(err) => return blocked(&err).ok_or(err),
    };
    // Before any step reads anything.
    let since_ms = crate::time::now_ms();
    record_start(&journal, &p, &args, &incident, &sources, &holder, since_ms);
    let policy = if args.dry_run {
        Policy::DryRun
    } else if args.yes {
        Policy::All
    } else {
        Policy::Steps(args.approve.iter().cloned().collect())
    };
    let mode = match args.dry_run {
        true => format!("{}, dry run", p.backend.mode()),
        false => p.backend.mode(),
    };
    let own_changes = crate::journal::own_changes(&*store, &incident).into();
    let durable = Durable {
        environment: p.backend.environment(),
        journal,
        store,
        replay: Arc::new(Replay::default()),
        holder,
        leases: !p.backend.is_simulation(),
        since_ms,
        own_changes,
    };
    let postmortem = args.markdown.as_ref().map(|file| {
        let context = crate::postmortem::Context {
            descriptions: p
                .plan
                .runbook
                .steps
                .iter()
                .map(|s| (s.id.to_string(), s.description.clone().unwrap_or_default()))
                .collect(),
            service: p.plan.runbook.service.clone(),
            incident: incident.clone(),
            audit_log: args.audit_log.as_ref().map(|a| a.display().to_string()),
            journal: Some(durable.journal.location()),
        };
        (file, context)
    });
    let ids = Ids {
        run: run_id,
        incident,
    };
    let report = execute_printing(&p, ids, mode, policy, durable, args.json).await?;
    if let Some((file, context)) = postmortem {
        let text = crate::postmortem::markdown(&report, &context);
        // The run is over either way: a file that cannot be written is
        // said, and the run's own exit status stands.
        if let Err(e) = std::fs::write(file, text) {
            eprintln!(
                "error: writing the Markdown timeline `{}`: {e}",
                file.display()
            );
            eprintln!(
                "hint: `runbook show {} --markdown` prints it again",
                report.run_id
            );
        }
    }
    finish(&p, &report, args.json, args.dry_run)
}

/// The journal's first line: what runs, against what, for which
/// incident, started by whom; what `show` and `resume` need.
fn record_start(
    journal: &Journal,
    p: &Prepared,
    args: &RunArgs,
    incident: &str,
    sources: &plan::Sources,
    holder: &Holder,
    since_ms: u64,
) {
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
    journal.record(
        "run-start",
        json!({
            "holder": holder,
            "incident": incident,
            "runbook": {
                "path": absolute(&args.runbook),
                "id": plan.runbook.runbook_id,
                "title": plan.runbook.title,
                "sha256": file_digest(&args.runbook),
                "escalation": plan.runbook.escalation,
                "max_mutations": plan.runbook.max_mutations,
                "service": plan.runbook.service,
                "steps": plan.runbook.steps.iter()
                    .map(|s| (s.id.to_string(), s.description.clone().unwrap_or_default()))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            },
            "audit_log": args.audit_log.as_deref().map(absolute),
            "plugins": plugins,
            "inputs": inputs,
            "backend": {
                "kind": if p.backend.is_simulation() { "simulation" } else { "live" },
                "path": backend_path,
                "sha256": file_digest(&backend_path),
                "incident_start": args.incident_start,
            },
            "sources": {
                "plugin_dirs": sources.plugin_dirs.iter().map(|d| absolute(d)).collect::<Vec<_>>(),
                "component_dirs": sources.component_dirs.iter().map(|d| absolute(d)).collect::<Vec<_>>(),
                "locked": sources.locked,
                "trust": sources.trust.as_ref().map(|t| absolute(&t.path)),
            },
            "policy": { "dry_run": args.dry_run, "yes": args.yes, "approve": args.approve },
            "host_version": env!("CARGO_PKG_VERSION"),
            "started_ms": since_ms,
        }),
    );
}

/// Executes, printing the timeline's header first and each step as it
/// ends (unless the report is wanted as JSON at the end).
/// A run's id and the incident it belongs to.
struct Ids {
    run: String,
    incident: String,
}

async fn execute_printing(
    p: &Prepared,
    ids: Ids,
    mode: String,
    policy: Policy,
    durable: Durable,
    json: bool,
) -> Result<Report> {
    if !json && !p.quiet {
        emit(&crate::report::header(
            &p.plan.runbook.runbook_id,
            &p.plan.runbook.title,
            &mode,
            &ids.run,
        ))?;
    }
    let used = durable.replay.applied;
    let on_step: Option<OnStep> = (!json && !p.quiet).then(|| {
        Box::new(|s: &StepReport| {
            let _ = emit(&crate::report::render_step(s));
        }) as OnStep
    });
    let cfg = RunConfig {
        run_id: ids.run,
        incident: ids.incident,
        mode,
        backends: p.backend.backends(&p.plan).await?,
        audit: p.audit.clone(),
        approver: Arc::new(Approver::new(
            policy,
            p.backend.is_simulation(),
            !p.quiet && Approver::terminal(),
        )),
        durable: Some(durable),
        budget: Budget::new(p.plan.runbook.max_mutations, used),
        on_step,
    };
    Ok(execute(&p.plan, &p.runtime, &cfg).await)
}

fn finish(p: &Prepared, report: &Report, json: bool, dry_run: bool) -> Result<Exit> {
    let mut out = String::new();
    // A scenario's `[expect]` is about the runbook it was written for: one
    // that names steps this runbook lacks is said, not held against it
    // (`runbook test` holds it).
    let expect = p.backend.expect().filter(|_| !dry_run);
    let foreign = expect.and_then(|e| {
        e.steps()
            .find(|id| p.plan.runbook.step(id).is_none())
            .map(str::to_string)
    });
    let expectation = expect
        .filter(|_| foreign.is_none())
        .map(|e| e.check(report));
    if json {
        let mut doc = serde_json::to_value(report)?;
        if let Some(e) = &expectation {
            doc["expectation"] = serde_json::to_value(e)?;
        }
        say!(out, "{}", serde_json::to_string_pretty(&doc)?);
    } else {
        out.push_str(&report.footer());
        match &expectation {
            Some(e) if e.met => say!(out, "scenario: took the expected path"),
            Some(e) => {
                say!(out, "scenario: did not take the expected path:");
                for d in &e.differences {
                    say!(out, "  {d}");
                }
            }
            None => {}
        }
        if let Some(id) = &foreign {
            say!(
                out,
                "scenario: its `[expect]` is for another runbook (it names step `{id}`, which this one lacks)"
            );
        }
    }
    if !p.quiet {
        emit(&out)?;
    }
    if expectation.is_some_and(|e| !e.met) {
        return Ok(Exit::Unexpected);
    }
    if let (Status::Blocked, Some(reason)) = (report.status, &report.reason) {
        // Also where scripts and `--json` callers look.
        eprintln!("blocked: {reason}");
        eprintln!(
            "hint: `runbook show` on the other run says what it did; if this runbook still needs to run, start it again with `--new`: it reads everything afresh"
        );
    }
    Ok(report.status.exit())
}

pub async fn resume(args: ResumeArgs) -> Result<Exit> {
    let ctx = RunContext::cli(&args.state)?;
    resume_in(args, &ctx).await
}

/// Continues a run, its journal in `ctx`'s store.
pub async fn resume_in(args: ResumeArgs, ctx: &RunContext) -> Result<Exit> {
    let store = ctx.store.clone();
    let lines = store.read_run(&args.run_id)?;
    let start = lines
        .iter()
        .find(|l| l["event"] == "run-start")
        .ok_or_else(|| {
            hinted(
                format!("run `{}` has no `run-start` in its journal", args.run_id),
                format!(
                    "`runbook verify-log` on its journal says whether it was altered; `runbook show {}` shows what is there",
                    args.run_id
                ),
            )
        })?
        .clone();
    if let Some(report) = crate::commands::journal::report_of(&*store, &args.run_id)?.filter(|r| {
        // A run that stopped for an approval goes on from that step.
        !matches!(r.status, Status::Unfinished | Status::AwaitingApproval)
    }) {
        let mut out = format!("run {} already finished; its report:\n", args.run_id);
        out.push_str(&report.render());
        if !ctx.quiet {
            emit(&out)?;
        }
        return Ok(report.status.exit());
    }
    let journal = match store.reopen_run(&args.run_id) {
        Ok(j) => Arc::new(j),
        Err(err) => return blocked(&err).ok_or(err),
    };
    let path = |v: &Value| PathBuf::from(v.as_str().unwrap_or_default());
    let runbook_path = path(&start["runbook"]["path"]);
    let backend_path = path(&start["backend"]["path"]);
    let simulation = start["backend"]["kind"] == "simulation";
    let backend = Backend::load(
        simulation.then_some(backend_path.as_path()),
        (!simulation).then_some(backend_path.as_path()),
        start["backend"]["incident_start"].as_str(),
    )
    .context("loading the run's backend again")?;
    let sources = plan::Sources {
        plugin_dirs: start["sources"]["plugin_dirs"]
            .as_array()
            .map(|a| a.iter().map(path).collect())
            .unwrap_or_default(),
        component_dirs: start["sources"]["component_dirs"]
            .as_array()
            .map(|a| a.iter().map(path).collect())
            .unwrap_or_default(),
        locked: start["sources"]["locked"].as_bool().unwrap_or(false),
        // The trust file the run started under still decides; one that
        // went missing since is an error, not a reason to skip the check.
        trust: match start["sources"]["trust"].as_str() {
            Some(t) => Some(Arc::new(crate::signing::Trust::load(Path::new(t))?)),
            None => None,
        },
    };
    let p = prepare(
        &runbook_path,
        backend,
        &sources,
        default_cache_dir(),
        args.audit_log.as_deref(),
        &args.run_id,
        ctx,
    )?;
    // What runs now must be what ran then.
    let changed = |what: &str, now: &str, then: &Value| {
        (then.as_str() != Some(now)).then(|| {
            hinted(
                format!(
                    "run `{}` cannot be resumed: {what} changed since it started",
                    args.run_id
                ),
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
    let holder = Holder::me(&args.run_id);
    let policy = if args.yes {
        Policy::All
    } else {
        Policy::Steps(args.approve.iter().cloned().collect())
    };
    journal.record(
        "resume",
        json!({ "holder": holder, "policy": { "yes": args.yes, "approve": args.approve } }),
    );
    let incident = start["incident"].as_str().unwrap_or_default().to_string();
    let own_changes = crate::journal::own_changes(&*store, &incident).into();
    let durable = Durable {
        environment: p.backend.environment(),
        own_changes,
        journal,
        store,
        replay: Arc::new(Replay::from_journal(&lines)),
        holder,
        leases: !simulation,
        // Journals from before `started_ms` was written: now.
        since_ms: start["started_ms"]
            .as_u64()
            .unwrap_or_else(crate::time::now_ms),
    };
    let mode = format!("{}, resumed", p.backend.mode());
    let ids = Ids {
        run: args.run_id.clone(),
        incident,
    };
    let report = execute_printing(&p, ids, mode, policy, durable, args.json).await?;
    finish(&p, &report, args.json, false)
}

/// A fresh run id: 48 random bits, in hex.
pub fn run_id() -> String {
    let mut bytes = [0u8; 6];
    if getrandom::fill(&mut bytes).is_err() {
        use std::hash::{BuildHasher, RandomState};
        let seed = RandomState::new().hash_one((std::process::id(), crate::time::now_ms()));
        bytes.copy_from_slice(&seed.to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
