//! Executes a [`Plan`]: one fresh, sandboxed instance per step, routed by
//! outcome labels until the run ends `resolved`, `escalated` or failed.

use crate::audit::AuditLog;
use crate::bindings::{Error, Outcome, Pair, RunContext};
use crate::capability::{Backends, Caller, StepShared, StepState};
use crate::engine::EPOCH_TICK;
use crate::grants::GrantChecker;
use crate::limits::StepLimiter;
use crate::plan::{Plan, PlannedStep};
use crate::report::{Report, Status, StepReport};
use crate::runbook::{ESCALATED, LABEL_ERROR, LABEL_LIMIT, RESOLVED};
use crate::scenario::rfc3339 as time;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

/// A runbook that loops (e.g. retry routes) still ends.
const MAX_STEPS: usize = 64;
/// Captured stdout/stderr per step; a guest writing more traps.
const OUTPUT_CAPACITY: usize = 64 * 1024;

pub struct RunConfig {
    pub run_id: String,
    pub mode: String,
    pub backends: Backends,
    pub audit: Option<Arc<AuditLog>>,
    pub approver: Arc<crate::approval::Approver>,
}

pub fn execute(plan: &Plan, engine: &wasmtime::Engine, cfg: &RunConfig) -> Report {
    let wall = Instant::now();
    let started_ms = cfg.backends.clock.now_ms();
    let mut steps = Vec::new();
    let mut current = plan.steps[0].def.id.to_string();
    let (status, reason) = loop {
        if steps.len() >= MAX_STEPS {
            break (
                Status::Failed,
                Some(format!(
                    "the run took more than {MAX_STEPS} steps; check the runbook's routes for a loop"
                )),
            );
        }
        let step = plan.step(&current).expect("plan validated every route");
        let mut report = run_step(step, engine, cfg);
        let next = step.def.on.get(&report.outcome).cloned();
        report.next = next.clone();
        if let Some(audit) = &cfg.audit {
            audit.event(
                &cfg.run_id,
                "step-end",
                serde_json::json!({
                    "step": report.id,
                    "plugin": report.plugin,
                    "plugin_digest": report.plugin_digest,
                    "outcome": report.outcome,
                    "summary": report.summary,
                    "next": next,
                }),
            );
        }
        let outcome = report.outcome.clone();
        let awaiting = report.awaiting_approval.clone();
        steps.push(report);
        if let Some(change) = awaiting {
            break (
                Status::AwaitingApproval,
                Some(format!(
                    "step `{current}` stopped before it could {change}: nobody approved it; rerun with `--approve {current}` (or `--yes`), or from a terminal to be asked"
                )),
            );
        }
        match next.as_deref() {
            Some(RESOLVED) => break (Status::Resolved, None),
            Some(ESCALATED) => {
                break (
                    Status::Escalated,
                    Some(format!("step `{current}` ended `{outcome}`")),
                );
            }
            Some(n) => current = n.to_string(),
            None => {
                let routed: Vec<&str> = step.def.on.keys().map(String::as_str).collect();
                break (
                    Status::Failed,
                    Some(format!(
                        "step `{current}` ended `{outcome}`, which the runbook does not route (it routes {})",
                        routed.join(", ")
                    )),
                );
            }
        }
    };
    let finished_ms = cfg.backends.clock.now_ms();
    let report = Report {
        runbook_id: plan.runbook.runbook_id.clone(),
        title: plan.runbook.title.clone(),
        run_id: cfg.run_id.clone(),
        mode: cfg.mode.clone(),
        status,
        reason,
        started_at: time(started_ms),
        finished_at: time(finished_ms),
        elapsed_ms: finished_ms.saturating_sub(started_ms),
        wall_ms: wall.elapsed().as_millis() as u64,
        steps,
        escalation: plan.runbook.escalation.clone(),
    };
    if let Some(audit) = &cfg.audit {
        audit.event(
            &cfg.run_id,
            "run-end",
            serde_json::json!({
                "runbook_id": report.runbook_id,
                "status": report.status,
                "reason": report.reason,
            }),
        );
    }
    report
}

/// Runs one step in a fresh store. Never fails: whatever happens becomes the
/// step's outcome label.
pub fn run_step(step: &PlannedStep, engine: &wasmtime::Engine, cfg: &RunConfig) -> StepReport {
    let limits = step.plugin.manifest.manifest.limits;
    let timeout = Duration::from_millis(limits.timeout_ms);
    let stdout = MemoryOutputPipe::new(OUTPUT_CAPACITY);
    let stderr = MemoryOutputPipe::new(OUTPUT_CAPACITY);
    // Nothing from the host leaks in: no preopened directories, no
    // environment, no arguments, no network (WASI's defaults), and output
    // goes to memory.
    let wasi: WasiCtx = WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .build();
    let now_ms = cfg.backends.clock.now_ms();
    let shared = StepShared::new(Instant::now() + timeout);
    let state = StepState {
        wasi,
        table: ResourceTable::new(),
        limiter: StepLimiter::new(limits.memory_mib as usize * 1024 * 1024),
        checker: GrantChecker::new(step.grants.clone()),
        backends: cfg.backends.clone(),
        caller: Caller {
            run_id: cfg.run_id.clone(),
            step: step.def.id.to_string(),
            plugin: step.plugin.name().to_string(),
            plugin_digest: step.plugin.digest.clone(),
        },
        audit: cfg.audit.clone(),
        approver: cfg.approver.clone(),
        shared: shared.clone(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(ticks_until(shared.deadline()));
    // The deadline moves when a person is asked to approve a mutation, so
    // the epoch check consults it rather than trapping at a fixed tick.
    store.epoch_deadline_callback(|ctx| {
        let deadline = ctx.data().deadline();
        if Instant::now() >= deadline {
            return Err(Trap::Interrupt.into());
        }
        Ok(UpdateDeadline::Continue(ticks_until(deadline)))
    });

    let ctx = RunContext {
        run_id: cfg.run_id.clone(),
        step_id: step.def.id.to_string(),
        now_ms,
        incident_start_ms: cfg.backends.clock.incident_start_ms(),
    };
    let inputs: Vec<Pair> = step
        .def
        .input_pairs()
        .into_iter()
        .map(|(key, value)| Pair { key, value })
        .collect();
    let started = Instant::now();
    let ran = run_watched(step.pre.clone(), store, ctx, inputs, &shared);
    let wall_us = started.elapsed().as_micros() as u64;
    let stderr_text = String::from_utf8_lossy(&stderr.contents()).into_owned();
    let (outcome, summary, facts) = match ran {
        Watched::Done(result, store) => classify(result, &store, &limits, &stderr_text),
        Watched::Crashed => (
            LABEL_ERROR.into(),
            "the host failed while running the step (its thread panicked); see stderr".into(),
            [("error".to_string(), "host".to_string())].into(),
        ),
        Watched::Abandoned => (
            LABEL_LIMIT.into(),
            format!(
                "limit exceeded: deadline of {} ms; the step was blocked outside WebAssembly (e.g. sleeping) and was abandoned",
                limits.timeout_ms
            ),
            [("limit".to_string(), "time".to_string())].into(),
        ),
    };
    let journal = std::mem::take(&mut *shared.journal());
    StepReport {
        id: step.def.id.to_string(),
        plugin: step.plugin.name().to_string(),
        plugin_digest: step.plugin.digest.clone(),
        outcome,
        summary,
        facts,
        calls: journal.calls,
        logs: journal.logs,
        stdout: String::from_utf8_lossy(&stdout.contents()).into_owned(),
        stderr: stderr_text,
        started_at: time(now_ms),
        wall_us,
        next: None,
        awaiting_approval: journal.awaiting,
    }
}

/// How long past its deadline a step is waited for before it is abandoned:
/// a step stopped by its deadline needs a moment to unwind and report.
const GRACE: Duration = Duration::from_secs(2);
/// The step thread's stack: guest frames and host calls (AWS SDK futures
/// among them) share it, so it gets what a main thread would.
const STEP_STACK: usize = 8 << 20;

type Job = Box<dyn FnOnce() + Send>;

/// The thread steps run on, reused from step to step (a new thread per step
/// costs more than the step).
static WORKER: std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>> = std::sync::Mutex::new(None);

/// Hands `job` to the step thread, starting one if there is none (or the
/// last one died with a panicking job).
fn submit(job: Job) -> std::io::Result<()> {
    let mut worker = WORKER.lock().unwrap_or_else(|e| e.into_inner());
    let job = match worker.as_ref() {
        Some(w) => match w.send(job) {
            Ok(()) => return Ok(()),
            Err(returned) => returned.0,
        },
        None => job,
    };
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("step".into())
        .stack_size(STEP_STACK)
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                job();
            }
        })?;
    tx.send(job)
        .map_err(|_| std::io::Error::other("the step thread stopped"))?;
    *worker = Some(tx);
    Ok(())
}

/// Leaves the current step thread to its stuck job: when that job ends,
/// the thread finds its queue closed and exits.
fn retire_worker() {
    *WORKER.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

enum Watched {
    Done(wasmtime::Result<Result<Outcome, Error>>, Store<StepState>),
    /// Still blocked past its deadline.
    Abandoned,
    /// The step's thread panicked (a host bug, not the guest's doing).
    Crashed,
}

type Ran = (wasmtime::Result<Result<Outcome, Error>>, Store<StepState>);

/// Runs the step on the step thread and waits for it until its deadline
/// (which approvals may move) plus [`GRACE`]. Epoch interruption stops guest
/// code, but not a guest blocked in a host call such as a WASI sleep: such a
/// step is abandoned (`None`). Anything it still tries after its deadline
/// is refused by the deadline check every capability call makes first.
fn run_watched(
    pre: crate::bindings::StepPre<StepState>,
    mut store: Store<StepState>,
    ctx: RunContext,
    inputs: Vec<Pair>,
    shared: &StepShared,
) -> Watched {
    let (tx, rx) = std::sync::mpsc::channel::<Ran>();
    let job = Box::new(move || {
        let result = pre
            .instantiate(&mut store)
            .and_then(|bindings| bindings.call_run(&mut store, &ctx, &inputs));
        let _ = tx.send((result, store));
    });
    if submit(job).is_err() {
        return Watched::Crashed;
    }
    loop {
        let left = (shared.deadline() + GRACE).saturating_duration_since(Instant::now());
        if left.is_zero() {
            if let Ok((result, store)) = rx.try_recv() {
                return Watched::Done(result, store);
            }
            // Waiting for a person to approve is not being stuck.
            if shared.abandon() {
                // The stuck job keeps its thread; later steps get a new one.
                retire_worker();
                return Watched::Abandoned;
            }
        }
        match rx.recv_timeout(left.clamp(Duration::from_millis(1), Duration::from_millis(100))) {
            Ok((result, store)) => return Watched::Done(result, store),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Watched::Crashed,
        }
    }
}

fn ticks_until(deadline: Instant) -> u64 {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .as_millis() as u64;
    left.div_ceil(EPOCH_TICK.as_millis() as u64) + 1
}

type Classified = (String, String, std::collections::BTreeMap<String, String>);

fn classify(
    result: wasmtime::Result<Result<Outcome, Error>>,
    store: &Store<StepState>,
    limits: &crate::manifest::Limits,
    stderr: &str,
) -> Classified {
    match result {
        Ok(Ok(o)) => {
            let facts = o.facts.into_iter().map(|p| (p.key, p.value)).collect();
            if crate::ids::Name::parse(&o.label).is_err() {
                return (
                    LABEL_ERROR.into(),
                    format!("the step returned an invalid outcome label `{}`", o.label),
                    facts,
                );
            }
            (o.label, o.summary, facts)
        }
        Ok(Err(e)) => (
            LABEL_ERROR.into(),
            format!("step error: {}", e.text()),
            [("error".to_string(), e.kind().to_string())].into(),
        ),
        Err(trap) => {
            if let Some(asked) = store.data().limiter.memory_refused {
                return (
                    LABEL_LIMIT.into(),
                    format!(
                        "limit exceeded: memory limit of {} MiB (the step asked for {} MiB)",
                        limits.memory_mib,
                        asked.div_ceil(1024 * 1024)
                    ),
                    [("limit".to_string(), "memory".to_string())].into(),
                );
            }
            if trap.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                return (
                    LABEL_LIMIT.into(),
                    format!("limit exceeded: deadline of {} ms", limits.timeout_ms),
                    [("limit".to_string(), "time".to_string())].into(),
                );
            }
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            let detail = if last.is_empty() {
                String::new()
            } else {
                format!(" ({last})")
            };
            let cause = trap.root_cause().to_string();
            if cause.contains("beyond capacity of MemoryOutputPipe") {
                return (
                    LABEL_LIMIT.into(),
                    format!(
                        "limit exceeded: the step wrote more than {} KiB to stdout or stderr",
                        OUTPUT_CAPACITY / 1024
                    ),
                    [("limit".to_string(), "output".to_string())].into(),
                );
            }
            (
                LABEL_ERROR.into(),
                format!("the step trapped: {cause}{detail}"),
                [("error".to_string(), "trap".to_string())].into(),
            )
        }
    }
}
