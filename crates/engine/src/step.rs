//! One step: a fresh sandboxed instance in its own store, run as a future
//! under its deadline, its outcome (returned, trapped, timed out, over a
//! limit) put in words as the step's report.

use crate::capture::Capture;
use crate::plan::PlannedStep;
use crate::report::StepReport;
use crate::run_config::RunConfig;
use crate::runtime::{Pre, Runtime};
use runbook_capabilities::bindings::{Error, Outcome, Pair, RunContext, convert};
use runbook_capabilities::limits::{self, LimitExceeded};
use runbook_capabilities::state::{StepSetup, StepShared, StepState};
use runbook_core::grants::GrantChecker;
use runbook_core::runbook::{LABEL_ERROR, LABEL_LIMIT};
use runbook_core::time::rfc3339 as time;
use runbook_journal::audit::Caller;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use wasmtime::{CallHook, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;

/// How a step's execution ended, before it is put in words.
enum Ended {
    /// The guest returned, or trapped.
    Ran(wasmtime::Result<Result<Outcome, Error>>),
    /// Its deadline passed while it was not running guest code; its future
    /// was dropped. `in_host`: it was inside a host call then (else it was
    /// waiting to be scheduled).
    Dropped { in_host: bool },
}

/// Runs one step in a fresh store. Never fails: whatever happens becomes
/// the step's outcome label.
/// What a step reports, as `history.steps` tells later steps.
pub fn summary_of(
    r: &StepReport,
) -> runbook_capabilities::bindings::runbook::host::history::StepSummary {
    runbook_capabilities::bindings::runbook::host::history::StepSummary {
        step_id: r.id.clone(),
        outcome: r.outcome.clone(),
        summary: r.summary.clone(),
        facts: r
            .facts
            .iter()
            .map(|(k, v)| Pair {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
    }
}

pub async fn run_step(step: &PlannedStep, runtime: &Runtime, cfg: &RunConfig) -> StepReport {
    run_step_after(step, runtime, cfg, &[]).await
}

/// Runs one step after `earlier` ones (what `history.steps` returns).
pub async fn run_step_after(
    step: &PlannedStep,
    runtime: &Runtime,
    cfg: &RunConfig,
    earlier: &[StepReport],
) -> StepReport {
    let _slot = runtime.instance_slot().await;
    let started = Instant::now();
    let pre = match step.pre(runtime) {
        Ok(pre) => pre,
        Err(e) => return unloadable(step, cfg, &format!("{e:#}")),
    };
    let limits = step.plugin.manifest.manifest.limits;
    let timeout = Duration::from_millis(limits.timeout_ms);
    let stdout = Capture::new(limits::MAX_OUTPUT);
    let stderr = Capture::new(limits::MAX_OUTPUT);
    // Nothing from the host leaks in: no preopened directories, no
    // environment, no arguments, no network (WASI's defaults), and output
    // goes to memory.
    let wasi: WasiCtx = WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .build();
    let now_ms = cfg.backends.clock().now_ms();
    let shared = StepShared::new(Instant::now() + timeout);
    let state = StepState::new(StepSetup {
        wasi,
        memory_bytes: limits.memory_mib as usize * 1024 * 1024,
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
        durable: cfg.durable.clone(),
        budget: cfg.budget.clone(),
        history: earlier.iter().map(summary_of).collect(),
        guard: cfg.guard.clone(),
    });
    let mut store = Store::new(&runtime.engine, state);
    store.limiter(|s| s.limiter());
    // Every tick: end guest code past the deadline, else yield to the
    // executor so other steps run too.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| {
        if Instant::now() >= ctx.data().deadline() {
            return Err(Trap::Interrupt.into());
        }
        // tokio's own yield puts the step behind every other ready task.
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
    // Whether a deadline found the step in a host call or in guest code.
    store.call_hook(|ctx, hook| {
        let shared = ctx.data().shared();
        match hook {
            CallHook::CallingHost => shared.set_in_host(true),
            CallHook::ReturningFromHost => shared.set_in_host(false),
            CallHook::CallingWasm | CallHook::ReturningFromWasm => {}
        }
        Ok(())
    });

    let ctx = RunContext {
        run_id: cfg.run_id.clone(),
        step_id: step.def.id.to_string(),
        now_ms,
        incident_start_ms: cfg.backends.clock().incident_start_ms(),
        incident: cfg.incident.clone(),
    };
    let inputs: Vec<Pair> = step
        .def
        .input_pairs()
        .into_iter()
        .map(|(key, value)| Pair { key, value })
        .collect();
    let setup = started.elapsed();
    let (ended, polled) = {
        let run = crate::busy::Busy::new(async {
            match &pre {
                Pre::Latest(pre) => {
                    let bindings = pre.instantiate_async(&mut store).await?;
                    bindings.call_run(&mut store, &ctx, &inputs).await
                }
                // Built against 0.1.0: its context is 0.2.0's without
                // `incident` (dropped in the conversion).
                Pre::V0_1(pre) => {
                    let bindings = pre.instantiate_async(&mut store).await?;
                    let inputs: Vec<
                        runbook_capabilities::bindings::v0_1::runbook::host::types::Pair,
                    > = convert(&inputs)?;
                    let ran = bindings
                        .call_run(&mut store, &convert(&ctx)?, &inputs)
                        .await?;
                    convert(ran)
                }
            }
        });
        tokio::pin!(run);
        let ended = loop {
            let deadline = shared.deadline();
            tokio::select! {
                biased;
                result = &mut run => break Ended::Ran(result),
                () = tokio::time::sleep_until(deadline.max(Instant::now()).into()) => {
                    // Waiting for a person is not being stuck (look again
                    // in a moment); and the deadline may have moved while
                    // they were asked.
                    if shared.is_asking() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    if Instant::now() < shared.deadline() {
                        continue;
                    }
                    // Read before the drop: unwinding the step's fiber
                    // leaves the host call.
                    break Ended::Dropped { in_host: shared.in_host() };
                }
            }
        };
        (ended, run.spent())
        // The step's future is dropped here, whatever it was doing.
    };
    let memory_refused = store.data().memory_refused();
    // The instance goes back to the pool before the step's time is taken:
    // the figure is the whole cost of the step.
    let teardown = Instant::now();
    drop(store);
    let busy_us = (setup + polled + teardown.elapsed()).as_micros() as u64;
    let wall_us = started.elapsed().as_micros() as u64;
    let (stdout_text, stdout_truncated) = stdout.contents();
    let (stderr_text, stderr_truncated) = stderr.contents();
    let trail = shared.take_trail();
    let (outcome, summary, facts) = match ended {
        Ended::Ran(Ok(Ok(o))) if !step.plugin.manifest.manifest.returns(&o.label) => (
            LABEL_ERROR.into(),
            format!(
                "the step returned outcome `{}`, which plugin `{}` does not declare",
                limits::clip(o.label, 64),
                step.plugin.name()
            ),
            [("error".to_string(), "undeclared-outcome".to_string())].into(),
        ),
        Ended::Ran(result) => classify(
            result,
            memory_refused,
            trail.limit.as_ref(),
            &limits,
            &stderr_text,
        ),
        Ended::Dropped { in_host } => limit_exceeded(
            "time",
            format!(
                "deadline of {} ms; the step was {} and was stopped",
                limits.timeout_ms,
                if in_host {
                    "blocked in a host call"
                } else {
                    "waiting to be scheduled"
                }
            ),
        ),
    };
    StepReport {
        id: step.def.id.to_string(),
        plugin: step.plugin.name().to_string(),
        plugin_digest: step.plugin.digest.clone(),
        outcome,
        summary,
        facts,
        calls: trail.calls,
        logs: trail.logs,
        stdout: stdout_text,
        stdout_truncated,
        stderr: stderr_text,
        stderr_truncated,
        started_at: time(now_ms),
        wall_us,
        busy_us,
        next: None,
        awaiting_approval: trail.awaiting,
        held_by: trail.held_by,
        blocked: trail.blocked,
        halted: trail.halted,
        run_id: cfg.run_id.clone(),
    }
}

/// The report of a step whose plugin could not be loaded or linked.
fn unloadable(step: &PlannedStep, cfg: &RunConfig, why: &str) -> StepReport {
    StepReport {
        id: step.def.id.to_string(),
        plugin: step.plugin.name().to_string(),
        plugin_digest: step.plugin.digest.clone(),
        outcome: LABEL_ERROR.into(),
        summary: format!("the plugin could not be loaded: {why}"),
        facts: [("error".to_string(), "load".to_string())].into(),
        calls: Vec::new(),
        logs: Vec::new(),
        stdout: String::new(),
        stdout_truncated: false,
        stderr: String::new(),
        stderr_truncated: false,
        started_at: time(cfg.backends.clock().now_ms()),
        wall_us: 0,
        busy_us: 0,
        next: None,
        awaiting_approval: None,
        held_by: None,
        blocked: None,
        halted: None,
        run_id: cfg.run_id.clone(),
    }
}

type Classified = (String, String, BTreeMap<String, String>);

fn limit_exceeded(limit: &str, detail: String) -> Classified {
    (
        LABEL_LIMIT.into(),
        format!("limit exceeded: {detail}"),
        [("limit".to_string(), limit.to_string())].into(),
    )
}

fn classify(
    result: wasmtime::Result<Result<Outcome, Error>>,
    memory_refused: Option<usize>,
    limit: Option<&LimitExceeded>,
    limits: &runbook_core::manifest::Limits,
    stderr: &str,
) -> Classified {
    match result {
        Ok(Ok(o)) => outcome(o),
        Ok(Err(e)) => (
            LABEL_ERROR.into(),
            limits::clip(format!("step error: {}", e.text()), limits::MAX_SUMMARY),
            [("error".to_string(), e.kind().to_string())].into(),
        ),
        Err(trap) => {
            if let Some(l) = limit.or_else(|| trap.downcast_ref::<LimitExceeded>()) {
                return limit_exceeded(l.limit, l.detail.clone());
            }
            if let Some(asked) = memory_refused {
                return limit_exceeded(
                    "memory",
                    format!(
                        "memory limit of {} MiB (the step asked for {} MiB)",
                        limits.memory_mib,
                        asked.div_ceil(1024 * 1024)
                    ),
                );
            }
            if trap.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                return limit_exceeded(
                    "time",
                    format!(
                        "deadline of {} ms; the step was running guest code and was stopped",
                        limits.timeout_ms
                    ),
                );
            }
            let detail = match panic_message(stderr) {
                Some(m) => format!(" ({m})"),
                None => String::new(),
            };
            let cause = trap.root_cause().to_string();
            (
                LABEL_ERROR.into(),
                limits::clip(
                    format!("the step trapped: {cause}{detail}"),
                    limits::MAX_SUMMARY,
                ),
                [("error".to_string(), "trap".to_string())].into(),
            )
        }
    }
}

/// What the step returned, unless its label is malformed or it hands the
/// host more than the limits allow.
fn outcome(o: Outcome) -> Classified {
    if runbook_core::ids::Name::parse(&o.label).is_err() {
        return (
            LABEL_ERROR.into(),
            format!(
                "the step returned an invalid outcome label `{}`",
                limits::clip(o.label, 64)
            ),
            BTreeMap::new(),
        );
    }
    if o.facts.len() > limits::MAX_FACTS {
        return limit_exceeded(
            "facts",
            format!(
                "the step returned {} facts; at most {} are kept",
                o.facts.len(),
                limits::MAX_FACTS
            ),
        );
    }
    if let Some(f) = o
        .facts
        .iter()
        .find(|f| f.key.len() > limits::MAX_FACT_KEY || f.value.len() > limits::MAX_FACT_VALUE)
    {
        return limit_exceeded(
            "facts",
            format!(
                "fact `{}` is {} bytes; keys may have {} and values {}",
                limits::clip(f.key.clone(), 64),
                f.key.len() + f.value.len(),
                limits::MAX_FACT_KEY,
                limits::MAX_FACT_VALUE
            ),
        );
    }
    if o.summary.len() > limits::MAX_SUMMARY {
        return limit_exceeded(
            "summary",
            format!(
                "the summary is {} bytes; at most {} are kept",
                o.summary.len(),
                limits::MAX_SUMMARY
            ),
        );
    }
    let facts = o.facts.into_iter().map(|p| (p.key, p.value)).collect();
    (o.label, o.summary, facts)
}

/// A Rust guest's panic message from its stderr: the line after
/// "panicked at …", not the backtrace note that follows it.
fn panic_message(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines();
    if stderr.contains("panicked at") {
        lines.by_ref().find(|l| l.contains("panicked at"))?;
        let message: Vec<&str> = lines
            .take_while(|l| !l.starts_with("note: "))
            .filter(|l| !l.trim().is_empty())
            .collect();
        return (!message.is_empty()).then(|| limits::clip(message.join(" "), 512));
    }
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with("note: "))
        .map(|l| limits::clip(l.to_string(), 512))
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn a_panic_message_is_found_before_the_backtrace_note() {
        let stderr = "thread '<unnamed>' panicked at src/lib.rs:9:5:\nindex out of bounds: the len is 0\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("index out of bounds: the len is 0")
        );
        assert_eq!(
            panic_message("just a line\n").as_deref(),
            Some("just a line")
        );
        assert_eq!(panic_message(""), None);
    }
}
